import DynamicCore
import Foundation

/// A convolution's unfolded weights (and bias) packed for the engine: the forward kernels and
/// the input-gradient kernels, re-packed when the parameters changed (once per training step).
final class ConvTrainingKernels: @unchecked Sendable {
    let forward: BlockedConv2D
    let inputGradient: BlockedConvInputGradient
    private var versions: (UInt64, UInt64)

    init(_ conv: Conv2d, options: KernelOptions) {
        let c = conv.config
        precondition(c.groups == 1 && BlockedConvInputGradient.supports(c),
                     "the engine runs dense convolutions (groups = 1) with padding ≥ stride − 1, got \(c)")
        // The 3 input channels of an RGB stem run as one zero-padded 8-channel block on the
        // direct kernels with the moments fused, not im2col (1.4–1.9 → 0.9 ms per ResNet step).
        forward = BlockedConv2D(weight: conv.weight.value, bias: conv.bias?.value, config: c, im2col: false,
                                options: options)
        inputGradient = BlockedConvInputGradient(weight: conv.weight.value, config: c, options: options)
        versions = (conv.weight.version, conv.bias?.version ?? 0)
    }

    func repackIfNeeded(_ conv: Conv2d) {
        let v = (conv.weight.version, conv.bias?.version ?? 0)
        guard v != versions else { return }
        if v.0 != versions.0 { inputGradient.repack(weight: conv.weight.value) }
        forward.repack(weight: conv.weight.value, bias: conv.bias?.value)
        versions = v
    }
}

extension Conv2d {
    /// The unfolded convolution packed for the engine's kernels (and its input gradient),
    /// re-packed when the parameters changed.
    func trainingKernels(options: KernelOptions) -> ConvTrainingKernels {
        packLock.lock()
        defer { packLock.unlock() }
        if let k = packedKernels, k.forward.options == options {
            k.repackIfNeeded(self)
            return k
        }
        let k = ConvTrainingKernels(self, options: options)
        packedKernels = k
        return k
    }
}

extension ConvTrainingKernels {
    /// The backward of the convolution from dz = dL/d(its output): the weight gradient from its
    /// forward input, then dL/d(input) added to the input's gradient (in place onto what its other
    /// readers contributed). When this is the input's last contribution and one pass writes it
    /// (stride 1), the epilogue gathers the batch-norm sums of the op that produced the input.
    func backward(_ conv: Conv2d, gradient dz: PooledBuffer, input: FeatureMap, inputBuffer: PooledBuffer) {
        let threads = input.engine.threads
        conv.weight.accumulateGrad(BlockedConvWeightGradient.compute(input: inputBuffer.buffer, gradOutput: dz.buffer,
                                                                     config: conv.config, threads: threads,
                                                                     options: forward.options))
        if let bias = conv.bias {
            bias.accumulateGrad(Tensor(shape: [conv.config.outChannels], scalars: BlockedOps.channelSums(dz.buffer, threads: threads)))
        }
        guard input.requiresGradient else { input.skipContribution(); return }
        // Phases of large strided kernels read dY beyond the halo every map has.
        var dy = dz
        let halo = inputGradient.gradientHalo(inputHeight: input.h, inputWidth: input.w)
        if dz.shape.halo < halo {
            var wide = dz.shape
            wide.halo = halo
            dy = input.engine.buffer(wide)
            BlockedOps.copyInterior(dz.buffer, into: dy.buffer, threads: threads)
        }
        let existing = input.grad
        let dst = existing ?? input.engine.buffer(input.gradientShape)
        let taker = input.isLastContribution && inputGradient.isSinglePass ? input.producer : nil
        let moments = taker?.gradientSums(for: dst.shape)
        inputGradient.run(dy.buffer, into: dst.buffer, residual: existing?.buffer, threads: threads, moments: moments)
        if let moments { taker!.tookGradientSums(moments) }
        input.grad = dst
        input.contributions += 1
    }
}
