import DynamicCore

// The ops that end a network: pooling a feature map to a vector and linear layers on vectors.

extension FeatureMap {
    /// Global average pool: [N, C, H, W] → [N, C]. Reference FLOPs: C·H·W per sample (the
    /// reference counter's pooling rule with a window of the whole map).
    public func globalAveragePooled() -> Variable {
        let e = engine
        let x = blocked()
        let out = Variable(engine: e, value: BlockedOps.globalAvgPool(x.buffer), samples: samples)
        e.charge(ComputeCost(referenceFLOPs: c * h * w), samples: samples)
        if e.isRecording {
            markUse()
            out.requiresGradient = true
            e.record(GlobalPoolNode(input: self, output: out))
        }
        return out
    }
}

final class GlobalPoolNode: TapeNode {
    let input: FeatureMap, output: Variable
    init(input: FeatureMap, output: Variable) { (self.input, self.output) = (input, output) }

    func backward() {
        guard let g = output.gradient, input.requiresGradient else { input.skipContribution(); return }
        let dx = input.engine.buffer(input.gradientShape)
        BlockedOps.globalAvgPoolBackward(g, into: dx.buffer)
        input.accumulateGradient(dx)
    }
}

extension Linear {
    /// y = x·Wᵀ + b on the engine. x: [N, in] → [N, out]. MACs in·out per sample; reference
    /// FLOPs in·out + out (weights + bias).
    public func callAsFunction(_ x: Variable) -> Variable {
        let e = x.engine
        let y = Variable(engine: e, value: Ops.linear(x.value, weight: weight.value, bias: bias?.value, threads: e.threads),
                         samples: x.samples)
        let macs = weight.value.count
        e.charge(ComputeCost(macs: macs, referenceFLOPs: macs + (bias?.value.count ?? 0)), samples: x.samples)
        return y.recorded(LinearNode(layer: self, input: x, output: y))
    }
}

final class LinearNode: TapeNode {
    let layer: Linear, input: Variable, output: Variable
    init(layer: Linear, input: Variable, output: Variable) { (self.layer, self.input, self.output) = (layer, input, output) }

    func backward() {
        guard let g = output.gradient else { return }
        let threads = output.engine.threads
        layer.weight.accumulateGrad(Ops.linearBackwardWeight(g, input: input.value, threads: threads))
        layer.bias?.accumulateGrad(Ops.biasGradient(g))
        if input.requiresGradient {
            input.accumulateGradient(Ops.linearBackwardInput(g, weight: layer.weight.value, threads: threads))
        }
    }
}
