import DynamicCore

extension Conv2d {
    /// act(conv(x) + bias) on the engine, activation and bias in the kernels' epilogue.
    /// x: [N, Cin, H, W] → [N, Cout, Ho, Wo]; `activation`: identity, ReLU or ReLU-1. For a
    /// convolution followed by batch norm use `ConvBNUnit` (statistics fused, BN folded in eval).
    public func callAsFunction(_ x: FeatureMap, activation: Activation = .identity) -> FeatureMap {
        precondition(x.c == config.inChannels, "conv expects \(config.inChannels) input channels, got \(x.shape)")
        precondition(activation.isClamp, "\(activation) is not fused into convolutions")
        let e = x.engine, c = config
        let o = c.outputSize(h: x.h, w: x.w)
        let perImage = c.macs(h: x.h, w: x.w)
        e.charge(ComputeCost(macs: perImage, referenceFLOPs: perImage + (activation == .relu ? c.outChannels * o.h * o.w : 0)),
                 samples: x.samples)
        let k = trainingKernels(options: e.kernels)
        let (xb, images) = x.convolutionInput(halo: Swift.max(c.padH, c.padW, 1))
        let y = e.buffer(BlockedShape(n: x.n, c: c.outChannels, h: o.h, w: o.w, halo: 1))
        k.forward.run(xb.buffer, inputImages: images, into: y.buffer, activation: activation, threads: e.threads)
        let out = x.derived(c: c.outChannels, h: o.h, w: o.w, y)
        return out.recorded(ConvNode(conv: self, kernels: k, input: x, inputBuffer: xb, output: out, y: y,
                                     activation: activation), inputs: [x])
    }
}

final class ConvNode: TapeNode {
    let conv: Conv2d, kernels: ConvTrainingKernels
    let input: FeatureMap, inputBuffer: PooledBuffer, output: FeatureMap, y: PooledBuffer
    let activation: Activation

    init(conv: Conv2d, kernels: ConvTrainingKernels, input: FeatureMap, inputBuffer: PooledBuffer, output: FeatureMap,
         y: PooledBuffer, activation: Activation) {
        (self.conv, self.kernels, self.input, self.inputBuffer, self.output, self.y, self.activation) =
            (conv, kernels, input, inputBuffer, output, y, activation)
    }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); return }
        output.grad = nil
        BlockedOps.clampBackward(g.buffer, output: y.buffer, activation: activation, threads: input.engine.threads)
        kernels.backward(conv, gradient: g, input: input, inputBuffer: inputBuffer)
    }
}
