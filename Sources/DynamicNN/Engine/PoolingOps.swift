import DynamicCore

extension FeatureMap {
    /// Max pooling: [N, C, H, W] → [N, C, Ho, Wo] (padding never wins). Reference FLOPs C·Ho·Wo·k².
    public func maxPooled(_ config: Pool2DConfig) -> FeatureMap { pooled(config, isMax: true) }

    /// Average pooling (PyTorch's divisor rule, `countIncludePad`): [N, C, H, W] → [N, C, Ho, Wo].
    /// Reference FLOPs C·Ho·Wo·k².
    public func averagePooled(_ config: Pool2DConfig) -> FeatureMap { pooled(config, isMax: false) }

    private func pooled(_ p: Pool2DConfig, isMax: Bool) -> FeatureMap {
        let e = engine
        let o = p.outputSize(h: h, w: w)
        precondition(o.h > 0 && o.w > 0, "pool \(p) leaves nothing of \(shape)")
        let x = blocked(halo: 1)
        let y = e.buffer(BlockedShape(n: n, c: c, h: o.h, w: o.w, halo: 1))
        BlockedOps.pool(x.buffer, into: y.buffer, p, isMax: isMax, threads: e.threads)
        e.charge(ComputeCost(referenceFLOPs: c * o.h * o.w * p.kernelH * p.kernelW), samples: samples)
        let out = FeatureMap(engine: e, n: n, c: c, h: o.h, w: o.w, storage: .blocked(y), samples: samples)
        if e.isRecording {
            markUse()
            out.requiresGradient = true
            e.record(PoolNode(input: self, inputBuffer: isMax ? x : nil, output: out, config: p, isMax: isMax))
        }
        return out
    }
}

final class PoolNode: TapeNode {
    let input: FeatureMap, inputBuffer: PooledBuffer?, output: FeatureMap
    let config: Pool2DConfig, isMax: Bool
    init(input: FeatureMap, inputBuffer: PooledBuffer?, output: FeatureMap, config: Pool2DConfig, isMax: Bool) {
        (self.input, self.inputBuffer, self.output, self.config, self.isMax) = (input, inputBuffer, output, config, isMax)
    }

    func backward() {
        guard let g = output.grad, input.requiresGradient else { input.skipContribution(); return }
        output.grad = nil
        let dx = input.engine.buffer(input.gradientShape)
        BlockedOps.poolBackward(g.buffer, input: inputBuffer?.buffer, into: dx.buffer, config, isMax: isMax,
                                threads: input.engine.threads)
        input.accumulateGradient(dx)
    }
}
