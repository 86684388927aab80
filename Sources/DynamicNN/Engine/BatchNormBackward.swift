import DynamicCore

/// A training-mode batch norm's backward as the engine runs it, shared by the ops that end in
/// one (`ConvBNUnit`, `BatchNorm2d`): its batch statistics, and the sums Σg, Σg·z — gathered by
/// the op that writes the output gradient last when it can (`GradientSumsTaker`), else swept here.
final class BatchNormBackward: GradientSumsTaker {
    let bn: BatchNorm2d
    /// The batch norm's input and its statistics.
    let z: PooledBuffer, mean: [Float], invStd: [Float]
    /// The ReLU after the batch norm as the sums see it; nil for none or ReLU-1 (masked beforehand).
    let relu: BlockedBatchNorm.ReLU?
    /// False when a mask the epilogues cannot apply (ReLU-1) comes first.
    let fusable: Bool
    private var pending: (sumG: [Double], sumGZ: [Double])?

    init(bn: BatchNorm2d, z: PooledBuffer, mean: [Float], invStd: [Float], relu: BlockedBatchNorm.ReLU?, fusable: Bool) {
        (self.bn, self.z, self.mean, self.invStd, self.relu, self.fusable) = (bn, z, mean, invStd, relu, fusable)
    }

    func gradientSums(for gradient: BlockedShape) -> ConvMoments? {
        fusable && gradient == z.shape ? ConvMoments(.gradientSums(input: z.buffer, relu: relu)) : nil
    }

    func tookGradientSums(_ sums: ConvMoments) {
        let t = sums.totals(channels: z.shape.c)
        pending = (t.sum, t.sumOfSquares)
    }

    /// From g = dL/d(output): accumulates dγ and dβ and returns dz's coefficients (dz = a·g + b·z + c).
    func backward(_ g: PooledBuffer, threads: Int) -> BlockedBatchNorm.Backward {
        precondition(g.shape == z.shape, "batch norm backward: gradient \(g.shape) vs input \(z.shape)")
        let sums = pending ?? BlockedBatchNorm.gradientSums(g.buffer, relu: relu, input: z.buffer, threads: threads)
        pending = nil
        let k = BlockedBatchNorm.backward(sumG: sums.sumG, sumGZ: sums.sumGZ, mean: mean, invStd: invStd,
                                          gamma: bn.weight.value.scalars, count: z.shape.n * z.shape.h * z.shape.w)
        bn.weight.accumulateGrad(Tensor(shape: [k.gamma.count], scalars: k.gamma))
        bn.bias.accumulateGrad(Tensor(shape: [k.beta.count], scalars: k.beta))
        return k
    }
}
