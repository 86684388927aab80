import DynamicCore

// Ops on plain tensors on the engine (`Variable`): what heads and gates compute.

extension FeatureMap {
    /// [N, C, H, W] → [N, C·H·W] in NCHW order (PyTorch's `flatten(1)`).
    public func flattened() -> Variable {
        let e = engine
        let out = Variable(engine: e, value: toTensor().reshaped([n, c * h * w]), samples: samples)
        if e.isRecording {
            markUse()
            out.requiresGradient = true
            e.record(FlattenNode(input: self, output: out))
        }
        return out
    }
}

final class FlattenNode: TapeNode {
    let input: FeatureMap, output: Variable
    init(input: FeatureMap, output: Variable) { (self.input, self.output) = (input, output) }

    func backward() {
        guard let g = output.gradient, input.requiresGradient else { input.skipContribution(); return }
        let dx = input.engine.buffer(input.gradientShape)
        dx.buffer.load(g.reshaped(input.shape))
        input.accumulateGradient(dx)
    }
}

extension Variable {
    /// Elementwise activation (ReLU, ReLU-1, leaky ReLU-1), any shape. Reference FLOPs: one per
    /// element for ReLU (the reference counter counts `nn.ReLU` only).
    public func activated(_ activation: Activation) -> Variable {
        let e = engine
        let out = Variable(engine: e, value: Ops.activation(value, activation), samples: samples)
        if activation == .relu { e.charge(ComputeCost(referenceFLOPs: value.count / Swift.max(shape[0], 1)), samples: samples) }
        return out.recorded(ActivationNode(input: self, output: out, activation: activation))
    }

    /// Softmax over the last axis of [N, K].
    public func softmax() -> Variable {
        let e = engine
        let out = Variable(engine: e, value: Ops.softmax(value), samples: samples)
        return out.recorded(SoftmaxNode(input: self, output: out))
    }
}

final class ActivationNode: TapeNode {
    let input: Variable, output: Variable, activation: Activation
    init(input: Variable, output: Variable, activation: Activation) {
        (self.input, self.output, self.activation) = (input, output, activation)
    }

    func backward() {
        guard let g = output.gradient, input.requiresGradient else { return }
        input.accumulateGradient(Ops.activationBackward(g, input: input.value, activation))
    }
}

final class SoftmaxNode: TapeNode {
    let input: Variable, output: Variable
    init(input: Variable, output: Variable) { (self.input, self.output) = (input, output) }

    /// dx = y ⊙ (g − Σ_k g_k y_k) per row.
    func backward() {
        guard let g = output.gradient, input.requiresGradient else { return }
        let y = output.value, k = y.shape[y.rank - 1], rows = y.count / k
        let dx = Tensor(shape: y.shape) { d in
            y.withUnsafeBufferPointer { yb in
                g.withUnsafeBufferPointer { gb in
                    for r in 0..<rows {
                        var dot: Float = 0
                        for j in 0..<k { dot += gb[r * k + j] * yb[r * k + j] }
                        for j in 0..<k { d[r * k + j] = yb[r * k + j] * (gb[r * k + j] - dot) }
                    }
                }
            }
        }
        input.accumulateGradient(dx)
    }
}

extension Variable {
    /// Rows `rows` (distinct indices into this variable's rows) as [rows.count, …], e.g. the gate
    /// values of the samples that run a block.
    public func gathering(rows: [Int]) -> Variable {
        precondition(!rows.isEmpty && Set(rows).count == rows.count && rows.allSatisfy { $0 >= 0 && $0 < shape[0] },
                     "gathering: distinct rows of \(shape[0])")
        let width = value.count / shape[0]
        let src = value.scalars
        let picked = Tensor(shape: [rows.count] + shape.dropFirst(), scalars: rows.flatMap { src[($0 * width)..<(($0 + 1) * width)] })
        let out = Variable(engine: engine, value: picked, samples: rows.map { samples?[$0] ?? $0 })
        return out.recorded(VariableGatherNode(input: self, rows: rows, output: out))
    }
}

final class VariableGatherNode: TapeNode {
    let input: Variable, rows: [Int], output: Variable
    init(input: Variable, rows: [Int], output: Variable) { (self.input, self.rows, self.output) = (input, rows, output) }

    func backward() {
        guard let g = output.gradient, input.requiresGradient else { return }
        let width = input.value.count / input.shape[0]
        var dx = [Float](repeating: 0, count: input.value.count)
        let gs = g.scalars
        for (i, r) in rows.enumerated() { for k in 0..<width { dx[r * width + k] = gs[i * width + k] } }
        input.accumulateGradient(Tensor(shape: input.shape, scalars: dx))
    }
}
