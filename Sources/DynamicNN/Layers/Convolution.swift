import DynamicCore
import Foundation

/// 2-D convolution (PyTorch `nn.Conv2d`). x: [N, Cin, H, W] → [N, Cout, Ho, Wo].
/// Parameters: `weight` [Cout, Cin/groups, kh, kw], `bias` [Cout] when enabled.
public final class Conv2d: Module, Layer {
    public let config: Conv2DConfig
    public let weight: Parameter
    public let bias: Parameter?
    /// Threads for this layer's kernels (nil: `Parallel.defaultThreads`).
    public var threads: Int?
    /// Input of the last training-mode forward, kept for `backward`.
    package var savedInput: Tensor?
    /// The engine's packed weights (`trainingKernels()`), built on first use.
    var packedKernels: ConvTrainingKernels?
    let packLock = NSLock()

    /// PyTorch's default init: weight ~ kaiming_uniform(a=√5) = U(±1/√fan_in), bias likewise.
    public init(_ config: Conv2DConfig, bias: Bool = true, rng: inout SeededRNG) {
        self.config = config
        weight = Parameter(Tensor.kaimingUniform(config.weightShape, a: Float(5).squareRoot(), rng: &rng))
        let bound = 1 / Float(Tensor.fans(of: config.weightShape).fanIn).squareRoot()
        self.bias = bias ? Parameter(Tensor.uniform([config.outChannels], low: -bound, high: bound, rng: &rng)) : nil
        super.init()
    }

    public convenience init(_ inChannels: Int, _ outChannels: Int, kernelSize: Int, stride: Int = 1,
                            padding: Int = 0, dilation: Int = 1, groups: Int = 1, bias: Bool = true,
                            rng: inout SeededRNG) {
        self.init(Conv2DConfig(inChannels: inChannels, outChannels: outChannels, kernelSize: kernelSize,
                               stride: stride, padding: padding, dilation: dilation, groups: groups),
                  bias: bias, rng: &rng)
    }

    override public var ownParameters: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedInput = x }
        return Ops.conv2d(x, weight: weight.value, bias: bias?.value, config: config, threads: threads)
    }
}

extension Conv2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let x = savedInput else { missingForward(self) }
        savedInput = nil
        weight.accumulateGrad(Ops.conv2dBackwardWeight(gradOutput, input: x, config: config, threads: threads))
        bias?.accumulateGrad(Ops.biasGradient(gradOutput))
        return Ops.conv2dBackwardInput(gradOutput, weight: weight.value, config: config,
                                       inputHeight: x.shape[2], inputWidth: x.shape[3], threads: threads)
    }
}
