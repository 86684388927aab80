import DynamicCore

extension FeatureMap {
    /// act(self + other), same shapes and rows; `activation`: identity, ReLU or ReLU-1.
    /// Reference FLOPs: one per element for ReLU.
    public func adding(_ other: FeatureMap, activation: Activation = .identity) -> FeatureMap {
        precondition(matches(other), "adding \(other.shape) to \(shape)")
        precondition(activation.isClamp, "\(activation) is not a clamp")
        let a = blocked(), b = other.blocked()
        precondition(a.shape == b.shape, "adding: buffers \(a.shape) and \(b.shape)")
        let y = engine.buffer(a.shape)
        BlockedOps.add(a.buffer, b.buffer, activation: activation, into: y.buffer, threads: engine.threads)
        if activation == .relu { engine.charge(ComputeCost(referenceFLOPs: c * h * w), samples: samples) }
        let out = derived(c: c, h: h, w: w, y)
        return out.recorded(AddNode(a: self, b: other, output: out, outputBuffer: y, activation: activation), inputs: [self, other])
    }

    /// x·s: s [N] or [N, 1] scales each sample, s [N, C] each (sample, channel) — a gate.
    /// Differentiable in both. Multiplications are not counted (the reference counter has no rule).
    public func scaled(by s: Variable) -> FeatureMap {
        precondition(s.shape == [n] || s.shape == [n, 1] || s.shape == [n, c], "scale \(s.shape) for \(shape)")
        precondition(s.samples == samples, "scale rows are not the map's rows")
        let x = blocked()
        let y = engine.buffer(x.shape)
        BlockedOps.scale(x.buffer, by: s.value.scalars, into: y.buffer, threads: engine.threads)
        let out = derived(c: c, h: h, w: w, y)
        return out.recorded(ScaleNode(input: self, inputBuffer: x, scale: s, output: out), inputs: [self])
    }

    /// Bilinear resize with `align_corners=True` (RANet's fusion, up- and down-sampling):
    /// [N, C, H, W] → [N, C, height, width]. Counts 0 (the reference counter's rule).
    public func resized(height: Int, width: Int) -> FeatureMap {
        precondition(height > 0 && width > 0, "resize to \(height)×\(width)")
        let y = engine.buffer(BlockedShape(n: n, c: c, h: height, w: width, halo: 1))
        BlockedOps.resizeBilinearAlignCorners(blocked().buffer, into: y.buffer, threads: engine.threads)
        let out = derived(c: c, h: height, w: width, y)
        return out.recorded(ResizeNode(input: self, output: out), inputs: [self])
    }
}

final class AddNode: TapeNode {
    let a: FeatureMap, b: FeatureMap, output: FeatureMap, outputBuffer: PooledBuffer, activation: Activation
    init(a: FeatureMap, b: FeatureMap, output: FeatureMap, outputBuffer: PooledBuffer, activation: Activation) {
        (self.a, self.b, self.output, self.outputBuffer, self.activation) = (a, b, output, outputBuffer, activation)
    }

    func backward() {
        guard let g = output.grad else { a.skipContribution(); b.skipContribution(); return }
        output.grad = nil
        let threads = output.engine.threads
        BlockedOps.clampBackward(g.buffer, output: outputBuffer.buffer, activation: activation, threads: threads)
        b.contributeGradient { dst, accumulate in
            if accumulate {
                BlockedOps.addInPlace(dst, g.buffer, threads: threads)
            } else {
                dst.pointer.update(from: g.pointer, count: dst.shape.count)
            }
        }
        a.accumulateGradient(g)
    }
}

final class ScaleNode: TapeNode {
    let input: FeatureMap, inputBuffer: PooledBuffer, scale: Variable, output: FeatureMap
    init(input: FeatureMap, inputBuffer: PooledBuffer, scale: Variable, output: FeatureMap) {
        (self.input, self.inputBuffer, self.scale, self.output) = (input, inputBuffer, scale, output)
    }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); return }
        output.grad = nil
        let threads = output.engine.threads
        if scale.requiresGradient {
            precondition(inputBuffer.shape == g.shape, "scale backward: input buffer \(inputBuffer.shape) vs \(g.shape)")
            let perChannel = BlockedOps.scaleGradient(g.buffer, input: inputBuffer.buffer, threads: threads)
            let ds: [Float]
            if scale.value.count == input.n * input.c {
                ds = perChannel
            } else {
                ds = (0..<input.n).map { i in perChannel[(i * input.c)..<((i + 1) * input.c)].reduce(0, +) }
            }
            scale.accumulateGradient(Tensor(shape: scale.shape, scalars: ds))
        }
        guard input.requiresGradient else { input.skipContribution(); return }
        BlockedOps.scale(g.buffer, by: scale.value.scalars, into: g.buffer, threads: threads)
        input.accumulateGradient(g)
    }
}

final class ResizeNode: TapeNode {
    let input: FeatureMap, output: FeatureMap
    init(input: FeatureMap, output: FeatureMap) { (self.input, self.output) = (input, output) }

    func backward() {
        guard let g = output.grad, input.requiresGradient else { input.skipContribution(); return }
        output.grad = nil
        let dx = input.engine.buffer(input.gradientShape)
        BlockedOps.resizeBilinearAlignCornersBackward(g.buffer, into: dx.buffer, threads: input.engine.threads)
        input.accumulateGradient(dx)
    }
}
