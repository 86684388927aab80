import DynamicCore
import Foundation

// Convolution + batch norm + activation + residual as one engine op: the fusions of the
// blocked ResNet kernels, open to any model.
//
// Eval mode: the batch norm is folded into the packed convolution, and the activation and the
// residual add run in its epilogue — one pass.
// Training mode: the convolution writes z and gathers the batch statistics in its epilogue
// (`ConvMoments`); one pass then normalises z, adds the residual (normalising it too when it is
// another batch norm's pending output, a projection shortcut) and applies the activation. With
// neither activation nor residual the output stays pending (`FeatureMap.Storage.normalized`).
// Backward: the batch norm's sums come from the input-gradient convolution that wrote the
// output gradient last when it could gather them, else from a sweep; dz = a·g + b·z + c (in
// place when g is not handed on); the weight gradient; the input gradient, added in place to
// what the input's other readers contributed, gathering its producer's sums when it is last.

extension ConvBNUnit {
    /// act(bn(conv(x)) + residual) on the engine. x: [N, Cin, H, W] → [N, Cout, Ho, Wo];
    /// residual: [N, Cout, Ho, Wo] or nil; `activation` overrides the unit's own (a residual
    /// block's second unit: `.identity` on its own, `.relu` after the add). Training mode
    /// (`bn.isTraining`) normalises with the batch statistics and updates the running ones;
    /// while the engine records, the op goes on its tape.
    public func callAsFunction(_ x: FeatureMap, residual: FeatureMap? = nil, activation: Activation? = nil) -> FeatureMap {
        let act = activation ?? self.activation
        let c = conv.config
        precondition(x.c == c.inChannels, "conv expects \(c.inChannels) input channels, got \(x.shape)")
        let o = c.outputSize(h: x.h, w: x.w)
        let outShape = BlockedShape(n: x.n, c: c.outChannels, h: o.h, w: o.w, halo: 1)
        if let r = residual {
            precondition((r.n, r.c, r.h, r.w) == (x.n, c.outChannels, o.h, o.w) && r.samples == x.samples,
                         "residual \(r.shape) must match the output [\(x.n), \(c.outChannels), \(o.h), \(o.w)]")
        }
        let e = x.engine
        let perImage = c.macs(h: x.h, w: x.w)
        e.charge(ComputeCost(macs: perImage, referenceFLOPs: perImage + (act == .relu ? c.outChannels * o.h * o.w : 0)),
                 samples: x.samples)
        if !bn.isTraining {
            precondition(!e.isRecording, "eval-mode batch norm while the engine records: no backward through folded weights")
            return foldedForward(x, residual: residual, activation: act, outShape: outShape)
        }
        precondition(act.isClamp, "\(act) is not fused into convolutions")
        let k = conv.trainingKernels(options: e.kernels)
        let xb = x.blocked(halo: Swift.max(c.padH, c.padW, 1))
        let z = e.buffer(outShape)
        let moments = ConvMoments()
        k.forward.run(xb.buffer, into: z.buffer, threads: e.threads, moments: moments)
        let count = x.n * o.h * o.w
        let t = moments.totals(channels: c.outChannels)
        let stats = BlockedBatchNorm.moments(sum: t.sum, sumOfSquares: t.sumOfSquares, count: count)
        let invStd = bn.recordBatch(mean: stats.mean, variance: stats.variance, count: count)
        let (scale, shift) = BatchNorm2d.affine(gamma: bn.weight.value.scalars, beta: bn.bias.value.scalars,
                                                mean: stats.mean, invStd: invStd)
        let output: FeatureMap
        var y: PooledBuffer?
        if act == .identity && residual == nil {
            output = FeatureMap(engine: e, n: x.n, c: c.outChannels, h: o.h, w: o.w,
                                storage: .normalized(z: z, scale: scale, shift: shift), samples: x.samples)
        } else {
            let out = e.buffer(outShape)
            if let r = residual, case .normalized(let rz, let rs, let rt) = r.storage {
                BlockedBatchNorm.normalize(z.buffer, scale: scale, shift: shift, residual: rz.buffer, residualScale: rs,
                                           residualShift: rt, activation: act, into: out.buffer, threads: e.threads)
            } else {
                let rb = residual?.blocked()
                precondition(rb.map { $0.shape == outShape } != false, "residual buffer \(rb!.shape) is not \(outShape)")
                BlockedBatchNorm.normalize(z.buffer, scale: scale, shift: shift, residual: rb?.buffer, activation: act,
                                           into: out.buffer, threads: e.threads)
            }
            y = out
            output = FeatureMap(engine: e, n: x.n, c: c.outChannels, h: o.h, w: o.w, storage: .blocked(out),
                                samples: x.samples)
        }
        if e.isRecording {
            let node = ConvBNNode(unit: self, kernels: k, input: x, inputBuffer: xb, residual: residual, output: output,
                                  z: z, y: y, mean: stats.mean, invStd: invStd, scale: scale, shift: shift, activation: act)
            x.markUse()
            residual?.markUse()
            output.requiresGradient = true
            output.producer = node.norm
            e.record(node)
        }
        return output
    }

    /// The eval-mode pass: BN folded into the packed weights, activation and residual in the epilogue.
    private func foldedForward(_ x: FeatureMap, residual: FeatureMap?, activation act: Activation,
                               outShape: BlockedShape) -> FeatureMap {
        let e = x.engine
        // im2col only for the network input itself: a blocked map of < 8 channels (after a
        // bottleneck of 6) reads as one padded block rather than going back to NCHW.
        var isNCHW = false
        if case .nchw = x.storage { isNCHW = true }
        let conv = blocked(options: e.kernels, im2col: isNCHW)
        let out = e.buffer(outShape)
        let r = residual?.blocked()
        precondition(r.map { $0.shape == outShape } != false, "residual buffer \(r!.shape) is not \(outShape)")
        if conv.usesIm2col {
            conv.run(nchw: x.toTensor(), into: out.buffer, residual: r?.buffer, activation: act, threads: e.threads)
        } else {
            let (xb, images) = x.convolutionInput(halo: Swift.max(conv.config.padH, conv.config.padW, 1))
            conv.run(xb.buffer, inputImages: images, into: out.buffer, residual: r?.buffer, activation: act, threads: e.threads)
        }
        return FeatureMap(engine: e, n: x.n, c: outShape.c, h: outShape.h, w: outShape.w, storage: .blocked(out),
                          samples: x.samples)
    }
}

/// The tape node of a training-mode `ConvBNUnit` op.
final class ConvBNNode: TapeNode {
    let unit: ConvBNUnit, kernels: ConvTrainingKernels
    let input: FeatureMap, inputBuffer: PooledBuffer
    let residual: FeatureMap?, output: FeatureMap
    /// The materialised output (nil while it is pending).
    let y: PooledBuffer?
    let activation: Activation
    let norm: BatchNormBackward

    init(unit: ConvBNUnit, kernels: ConvTrainingKernels, input: FeatureMap, inputBuffer: PooledBuffer, residual: FeatureMap?,
         output: FeatureMap, z: PooledBuffer, y: PooledBuffer?, mean: [Float], invStd: [Float], scale: [Float], shift: [Float],
         activation: Activation) {
        (self.unit, self.kernels, self.input, self.inputBuffer, self.residual, self.output, self.y, self.activation) =
            (unit, kernels, input, inputBuffer, residual, output, y, activation)
        // The ReLU as the backward sees it: without a residual its mask is recomputed from z (no
        // extra activation to stream); after a residual add it comes from y.
        var relu: BlockedBatchNorm.ReLU?
        if activation == .relu { relu = residual == nil ? .recomputed(scale: scale, shift: shift) : .output(y!.buffer) }
        norm = BatchNormBackward(bn: unit.bn, z: z, mean: mean, invStd: invStd, relu: relu, fusable: activation != .relu1)
    }

    func backward() {
        guard let g = output.grad else {
            input.skipContribution()
            residual?.skipContribution()
            return
        }
        let threads = output.engine.threads
        if activation == .relu1 { BlockedOps.clampBackward(g.buffer, output: y!.buffer, activation: .relu1, threads: threads) }
        let k = norm.backward(g, threads: threads)
        // g (masked by the ReLU) is also the residual's gradient: then dz needs a buffer of its own.
        let dz = residual == nil ? g : output.engine.buffer(norm.z.shape)
        BlockedBatchNorm.applyBackward(k, gradient: g.buffer, input: norm.z.buffer, relu: norm.relu, into: dz.buffer,
                                       threads: threads)
        residual?.accumulateGradient(g)
        output.grad = nil
        kernels.backward(unit.conv, gradient: dz, input: input, inputBuffer: inputBuffer)
    }
}
