import DynamicCore

extension BatchNorm2d {
    /// act(bn(x)) on the engine for a batch norm with no convolution before it (after one, use
    /// `ConvBNUnit`, which gathers the statistics in the convolution). x: [N, C, H, W].
    /// Training mode: batch statistics over N, H, W (a sweep), running statistics updated.
    /// `activation`: identity, ReLU or ReLU-1.
    public func callAsFunction(_ x: FeatureMap, activation: Activation = .identity) -> FeatureMap {
        precondition(x.c == channels, "BatchNorm2d(\(channels)) got \(x.shape)")
        precondition(activation.isClamp, "\(activation) is not fused into batch norm")
        let e = x.engine
        let z = x.blocked()
        let y = e.buffer(z.shape)
        if activation == .relu { e.charge(ComputeCost(referenceFLOPs: x.c * x.h * x.w), samples: x.samples) }
        guard isTraining else {
            precondition(!e.isRecording, "eval-mode batch norm while the engine records")
            let invStd = runningVar.value.scalars.map { 1 / ($0 + eps).squareRoot() }
            let (scale, shift) = Self.affine(gamma: weight.value.scalars, beta: bias.value.scalars,
                                             mean: runningMean.value.scalars, invStd: invStd)
            BlockedBatchNorm.normalize(z.buffer, scale: scale, shift: shift, activation: activation, into: y.buffer,
                                       threads: e.threads)
            return x.derived(c: x.c, h: x.h, w: x.w, y)
        }
        let stats = BlockedBatchNorm.statistics(z.buffer, threads: e.threads)
        let invStd = recordBatch(mean: stats.mean, variance: stats.variance, count: x.n * x.h * x.w)
        let (scale, shift) = Self.affine(gamma: weight.value.scalars, beta: bias.value.scalars, mean: stats.mean, invStd: invStd)
        BlockedBatchNorm.normalize(z.buffer, scale: scale, shift: shift, activation: activation, into: y.buffer,
                                   threads: e.threads)
        let out = x.derived(c: x.c, h: x.h, w: x.w, y)
        guard e.isRecording else { return out }
        let node = BatchNormNode(bn: self, input: x, z: z, output: out, y: y, mean: stats.mean, invStd: invStd,
                                 activation: activation)
        out.producer = node.norm
        return out.recorded(node, inputs: [x])
    }

    /// Batch norm over [N, C] on the engine (PyTorch `BatchNorm1d` on vectors, e.g. in a gate
    /// network): training mode normalises with the batch statistics over N.
    public func callAsFunction(_ x: Variable) -> Variable {
        precondition(x.value.rank == 2 && x.shape[1] == channels, "BatchNorm2d(\(channels)) on vectors got \(x.shape)")
        let e = x.engine
        guard isTraining else {
            precondition(!e.isRecording, "eval-mode batch norm while the engine records")
            return Variable(engine: e, value: Ops.batchNorm(x.value, gamma: weight.value, beta: bias.value,
                                                            mean: runningMean.value, variance: runningVar.value, eps: eps),
                            samples: x.samples)
        }
        let (mean, variance) = Self.batchStatistics(x.value)
        let cache = BatchNormCache(input: x.value, mean: mean, invStd: recordBatch(mean: mean, variance: variance, count: x.shape[0]))
        let out = Variable(engine: e, value: cache.output(gamma: weight.value, beta: bias.value), samples: x.samples)
        return out.recorded(VectorBatchNormNode(bn: self, input: x, cache: cache, output: out))
    }
}

final class BatchNormNode: TapeNode {
    let input: FeatureMap, output: FeatureMap, y: PooledBuffer, activation: Activation
    let norm: BatchNormBackward

    init(bn: BatchNorm2d, input: FeatureMap, z: PooledBuffer, output: FeatureMap, y: PooledBuffer, mean: [Float],
         invStd: [Float], activation: Activation) {
        (self.input, self.output, self.y, self.activation) = (input, output, y, activation)
        norm = BatchNormBackward(bn: bn, z: z, mean: mean, invStd: invStd, relu: activation == .relu ? .output(y.buffer) : nil,
                                 fusable: activation != .relu1)
    }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); return }
        output.grad = nil
        let threads = input.engine.threads
        if activation == .relu1 { BlockedOps.clampBackward(g.buffer, output: y.buffer, activation: .relu1, threads: threads) }
        let k = norm.backward(g, threads: threads)
        guard input.requiresGradient else { input.skipContribution(); return }
        BlockedBatchNorm.applyBackward(k, gradient: g.buffer, input: norm.z.buffer, into: g.buffer, threads: threads)
        input.accumulateGradient(g)
    }
}

final class VectorBatchNormNode: TapeNode {
    let bn: BatchNorm2d, input: Variable, cache: BatchNormCache, output: Variable
    init(bn: BatchNorm2d, input: Variable, cache: BatchNormCache, output: Variable) {
        (self.bn, self.input, self.cache, self.output) = (bn, input, cache, output)
    }

    func backward() {
        guard let g = output.gradient else { return }
        let r = Ops.batchNormTrainingBackward(g, input: cache.input, mean: cache.mean, invStd: cache.invStd, gamma: bn.weight.value)
        bn.weight.accumulateGrad(r.gamma)
        bn.bias.accumulateGrad(r.beta)
        if input.requiresGradient { input.accumulateGradient(r.input) }
    }
}
