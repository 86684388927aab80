import DynamicCore
import Foundation

// Training-mode execution of the CIFAR ResNets of He et al. (CVPR 2016) on NCHW8c buffers.
// The layer-by-layer NCHW path (`Differentiable` conformances in Training/Backward.swift)
// computes the same step and serves as this plan's reference in the tests.

/// A convolution followed by a training-mode batch norm, with everything its forward and
/// backward need: packed weights (forward and input-gradient convolutions, re-packed when the
/// weights change), the raw convolution output z, its gradient buffer, and the batch statistics.
final class TrainingUnit {
    let conv: Conv2d, bn: BatchNorm2d
    let forward: BlockedConv2D
    let inputGradient: BlockedConvInputGradient
    /// Raw convolution output [N, Cout, Ho, Wo] and dL/dz (halo 1).
    let z: BlockedBuffer, dz: BlockedBuffer
    private var packedVersion: UInt64 = .max
    var mean: [Float] = [], invStd: [Float] = []
    var scale: [Float] = [], shift: [Float] = []
    /// Σz, Σz² gathered by the forward convolution as it writes z.
    private let moments = ConvMoments()
    /// Σg, Σg·z of this batch norm's backward, gathered by the input-gradient convolution that
    /// writes g (see `gradientSums(relu:)`), waiting for `backwardBatchNorm`.
    private let gradientMoments = ConvMoments()
    private var pendingGradientSums: (sumG: [Double], sumGZ: [Double])?

    /// `gradientRole` names the shared dz buffer: units whose dz lives at the same time need different roles.
    /// The stem's 3 input channels run as one zero-padded 8-channel block on the direct kernels
    /// (moments fused), not the im2col route: measured 1.4–1.9 → 0.9 ms per step at batch 128.
    init(conv: Conv2d, bn: BatchNorm2d, input: BlockedShape, gradientRole: String = "dz",
         buffers: inout TrainingBuffers) {
        self.conv = conv
        self.bn = bn
        let c = conv.config
        precondition(c.groups == 1 && c.dilationH == 1 && c.dilationW == 1 && c.padH <= 1 && c.padW <= 1
                     && c.kernelH <= 3 && c.kernelW <= 3 && BlockedConvInputGradient.supports(c),
                     "blocked training handles dense, undilated convolutions up to 3×3 with padding ≤ 1")
        forward = BlockedConv2D(weight: conv.weight.value, bias: nil, config: c, im2col: false)
        inputGradient = BlockedConvInputGradient(weight: conv.weight.value, config: c)
        let out = forward.outputShape(n: input.n, h: input.h, w: input.w, halo: 1)
        z = BlockedBuffer(out)
        dz = buffers.shared(gradientRole, out)
    }

    var outputShape: BlockedShape { z.shape }

    /// Re-packs both convolutions when the weights changed since the last step.
    func pack() {
        guard conv.weight.version != packedVersion else { return }
        forward.repack(weight: conv.weight.value, bias: nil)
        inputGradient.repack(weight: conv.weight.value)
        packedVersion = conv.weight.version
    }

    /// Convolution into z (weights packed by `pack()`), then the batch statistics: updates the
    /// running statistics and sets the per-channel scale and shift of the normalisation.
    func run(_ input: BlockedBuffer, threads: Int) {
        precondition(conv.weight.version == packedVersion, "TrainingUnit.run before pack()")
        let count = z.shape.n * z.shape.h * z.shape.w
        forward.run(input, into: z, threads: threads, moments: moments)
        let t = moments.totals(channels: z.shape.c)
        let s = BlockedBatchNorm.moments(sum: t.sum, sumOfSquares: t.sumOfSquares, count: count)
        mean = s.mean
        invStd = bn.recordBatch(mean: s.mean, variance: s.variance, count: count)
        (scale, shift) = BatchNorm2d.affine(gamma: bn.weight.value.scalars, beta: bn.bias.value.scalars,
                                            mean: mean, invStd: invStd)
    }

    /// Batch-norm backward from g = dL/d(bn output), masked by the ReLU after the batch norm:
    /// accumulates dγ, dβ and fills `dz`. `relu`: `.output(y)` masks g in place (others read the
    /// masked g too); `.recomputed` takes the mask from z and this step's scale and shift.
    /// When the convolution that produced g gathered the sums already (`gradientSums(relu:)`
    /// passed to its `backwardConvolution`), they are used instead of a sweep over g and z.
    func backwardBatchNorm(_ g: BlockedBuffer, relu: BlockedBatchNorm.ReLU?, threads: Int) {
        let sums = pendingGradientSums ?? BlockedBatchNorm.gradientSums(g, relu: relu, input: z, threads: threads)
        pendingGradientSums = nil
        let k = BlockedBatchNorm.backward(sumG: sums.sumG, sumGZ: sums.sumGZ, mean: mean, invStd: invStd,
                                          gamma: bn.weight.value.scalars, count: z.shape.n * z.shape.h * z.shape.w)
        bn.weight.accumulateGrad(Tensor(shape: [k.gamma.count], scalars: k.gamma))
        bn.bias.accumulateGrad(Tensor(shape: [k.beta.count], scalars: k.beta))
        BlockedBatchNorm.applyBackward(k, gradient: g, input: z, relu: relu, into: dz, threads: threads)
    }

    /// The sums this unit's `backwardBatchNorm` needs, for the producer of its output gradient
    /// to gather (`ConvMoments.gradientSums` against z).
    func gradientSums(relu: BlockedBatchNorm.ReLU?) -> ConvMoments {
        gradientMoments.kind = .gradientSums(input: z, relu: relu)
        return gradientMoments
    }

    /// Weight gradient from the forward input, then dL/dinput (+ residual) into `inputGrad`.
    /// `consumer`: the unit whose batch norm gets `inputGrad` as its output gradient, with the
    /// ReLU after it; when this convolution writes it in one pass (stride 1), its epilogue
    /// gathers the consumer's gradient sums (and masks the stored gradient).
    func backwardConvolution(input: BlockedBuffer, into inputGrad: BlockedBuffer?, residual: BlockedBuffer? = nil,
                             consumer: (unit: TrainingUnit, relu: BlockedBatchNorm.ReLU?)? = nil, threads: Int) {
        let c = conv.config
        conv.weight.accumulateGrad(BlockedConvWeightGradient.compute(input: input, gradOutput: dz, config: c,
                                                                     threads: threads))
        guard let inputGrad else { return }
        guard let consumer, inputGradient.isSinglePass else {
            inputGradient.run(dz, into: inputGrad, residual: residual, threads: threads)
            return
        }
        let moments = consumer.unit.gradientSums(relu: consumer.relu)
        inputGradient.run(dz, into: inputGrad, residual: residual, threads: threads, moments: moments)
        let t = moments.totals(channels: inputGrad.shape.c)
        consumer.unit.pendingGradientSums = (t.sum, t.sumOfSquares)     // Σg, Σg·z
    }
}

/// Activation-gradient buffers shared by layers of the same shape (the backward pass visits
/// one layer at a time), looked up by role and shape.
struct TrainingBuffers {
    private var buffers: [String: BlockedBuffer] = [:]

    mutating func shared(_ role: String, _ shape: BlockedShape) -> BlockedBuffer {
        let key = "\(role) \(shape)"
        if let b = buffers[key] { return b }
        let b = BlockedBuffer(shape)
        buffers[key] = b
        return b
    }
}

/// One training step's forward and backward for a `CIFARResNet` and one input shape, entirely
/// on NCHW8c buffers allocated once: convolutions by the NCHW8c kernels (forward, input
/// gradient as a convolution with flipped weights, weight gradient), batch norm by
/// `BlockedBatchNorm`, the block output (+ shortcut, ReLU) in one pass.
final class ResNetTrainingPlan {
    struct Block {
        let unit1: TrainingUnit, unit2: TrainingUnit, projection: TrainingUnit?
        /// Input (the previous block's output), mid = relu(bn1(z1)), output = relu(bn2(z2) + shortcut).
        let input: BlockedBuffer, mid: BlockedBuffer, output: BlockedBuffer
        /// Gradient buffers, one per role and shape (shared by the blocks of a stage): dmid, which
        /// unit1's batch-norm backward turns into its dz in place, dL/d(output) and dL/d(input).
        /// Without a projection gradInput is gradOutput: unit1's input gradient is added to the
        /// residual in place (with one, to the shortcut's input gradient in gradInput). That
        /// needs no second gradient buffer per shape nor a shortcut buffer (ResNet-56 at batch
        /// 128: 31 MB less) and streams one buffer less in that pass (stage 1: 1.88 → 1.62 ms).
        let gradMid: BlockedBuffer, gradOutput: BlockedBuffer, gradInput: BlockedBuffer
    }

    let inputShape: [Int]
    let image: BlockedBuffer
    let stem: TrainingUnit
    let stemOutput: BlockedBuffer, stemGrad: BlockedBuffer
    let imageGrad: BlockedBuffer
    let blocks: [Block]
    /// Every unit: the stem, then each block's units.
    private let units: [TrainingUnit]
    private var pendingBackward = false

    init(model m: CIFARResNet, n: Int, h: Int, w: Int) {
        inputShape = [n, 3, h, w]
        var shared = TrainingBuffers()
        image = BlockedBuffer(BlockedShape(n: n, c: 3, h: h, w: w, halo: 1))
        stem = TrainingUnit(conv: m.conv1, bn: m.bn1, input: image.shape, buffers: &shared)
        stemOutput = BlockedBuffer(stem.outputShape)
        imageGrad = BlockedBuffer(BlockedShape(n: n, c: 3, h: h, w: w, halo: 0))
        stemGrad = shared.shared("grad", stem.outputShape)
        var current = stemOutput
        var blocks: [Block] = []
        for stage in m.stages {
            for case let b as BasicBlock in stage.layers {
                let u1 = TrainingUnit(conv: b.conv1, bn: b.bn1, input: current.shape, gradientRole: "mid", buffers: &shared)
                let u2 = TrainingUnit(conv: b.conv2, bn: b.bn2, input: u1.outputShape, buffers: &shared)
                let p = b.projection.map { TrainingUnit(conv: $0.conv, bn: $0.bn, input: current.shape, gradientRole: "dz shortcut",
                                                                buffers: &shared) }
                let block = Block(unit1: u1, unit2: u2, projection: p, input: current, mid: BlockedBuffer(u1.outputShape),
                                  output: BlockedBuffer(u2.outputShape), gradMid: shared.shared("mid", u1.outputShape),
                                  gradOutput: shared.shared("grad", u2.outputShape), gradInput: shared.shared("grad", current.shape))
                precondition(p != nil || block.gradInput === block.gradOutput, "an identity shortcut keeps the shape")
                blocks.append(block)
                current = block.output
            }
        }
        self.blocks = blocks
        units = [stem] + blocks.flatMap { [$0.unit1, $0.unit2] + ($0.projection.map { [$0] } ?? []) }
    }

    /// Training-mode forward: logits [N, classes] for x [N, 3, H, W] of the planned shape.
    /// Updates every batch norm's running statistics; `backward` must follow before the next forward.
    func forward(_ m: CIFARResNet, _ x: Tensor, threads: Int) -> Tensor {
        precondition(x.shape == inputShape, "training plan for \(inputShape) got \(x.shape)")
        // Every unit re-packs its changed weights, spread over the threads (ResNet-56: ~1 ms).
        let units = self.units
        Parallel.forEach(units.count, threads: threads) { units[$0].pack() }
        image.load(x)
        stem.run(image, threads: threads)
        BlockedBatchNorm.normalize(stem.z, scale: stem.scale, shift: stem.shift, activation: .relu, into: stemOutput,
                                   threads: threads)
        for b in blocks {
            b.unit1.run(b.input, threads: threads)
            BlockedBatchNorm.normalize(b.unit1.z, scale: b.unit1.scale, shift: b.unit1.shift, activation: .relu,
                                       into: b.mid, threads: threads)
            b.unit2.run(b.mid, threads: threads)
            if let p = b.projection {
                p.run(b.input, threads: threads)
                BlockedBatchNorm.normalize(b.unit2.z, scale: b.unit2.scale, shift: b.unit2.shift, residual: p.z,
                                           residualScale: p.scale, residualShift: p.shift, activation: .relu,
                                           into: b.output, threads: threads)
            } else {
                BlockedBatchNorm.normalize(b.unit2.z, scale: b.unit2.scale, shift: b.unit2.shift, residual: b.input,
                                           activation: .relu, into: b.output, threads: threads)
            }
        }
        pendingBackward = true
        return m.linear(BlockedOps.globalAvgPool(blocks.last?.output ?? stemOutput))
    }

    /// Backward of the last `forward`: dL/dlogits [N, classes] → dL/dx [N, 3, H, W] (nil without
    /// `inputGradient`); accumulates every parameter gradient.
    func backward(_ m: CIFARResNet, _ gradLogits: Tensor, threads: Int, inputGradient: Bool = true) -> Tensor? {
        precondition(pendingBackward, "CIFARResNet.backward called without a training-mode forward before it")
        pendingBackward = false
        BlockedOps.globalAvgPoolBackward(m.linear.backward(gradLogits), into: blocks.last?.gradOutput ?? stemGrad)
        for (i, b) in blocks.enumerated().reversed() {
            let g = b.gradOutput
            // out = relu(bn2(z2) + shortcut): mask g by out once; both branches see the masked g.
            b.unit2.backwardBatchNorm(g, relu: .output(b.output), threads: threads)
            b.projection?.backwardBatchNorm(g, relu: nil, threads: threads)
            // mid = relu(bn1(z1)) is read by nothing else here: its mask comes from z1, which the
            // batch norm reads anyway (one activation less to stream). The input gradient that
            // writes gradMid gathers bn1's gradient sums on the way.
            let relu1 = BlockedBatchNorm.ReLU.recomputed(scale: b.unit1.scale, shift: b.unit1.shift)
            b.unit2.backwardConvolution(input: b.mid, into: b.gradMid, consumer: (b.unit1, relu1), threads: threads)
            b.unit1.backwardBatchNorm(b.gradMid, relu: relu1, threads: threads)
            // gradInput is the previous block's output gradient (or the stem's): its bn2 sums,
            // masked by that block's output, are gathered as it is written.
            let consumer = (i > 0 ? blocks[i - 1].unit2 : stem, BlockedBatchNorm.ReLU.output(b.input))
            // dL/dinput = shortcut gradient + unit1's input gradient, the latter added in place:
            // the shortcut's is g itself (gradInput is g) or the projection's, written first.
            if let p = b.projection {
                p.backwardConvolution(input: b.input, into: b.gradInput, threads: threads)
            }
            b.unit1.backwardConvolution(input: b.input, into: b.gradInput, residual: b.gradInput, consumer: consumer,
                                        threads: threads)
        }
        stem.backwardBatchNorm(stemGrad, relu: .output(stemOutput), threads: threads)
        stem.backwardConvolution(input: image, into: inputGradient ? imageGrad : nil, threads: threads)
        return inputGradient ? imageGrad.toTensor() : nil
    }
}
