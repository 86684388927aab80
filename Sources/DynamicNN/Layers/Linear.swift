import DynamicCore
import Foundation

/// Fully connected layer (PyTorch `nn.Linear`). x: [N, in] → [N, out]; `weight` [out, in], `bias` [out].
public final class Linear: Module, Layer {
    public let weight: Parameter
    public let bias: Parameter?
    public var threads: Int?
    /// Input of the last training-mode forward, kept for `backward`.
    var savedInput: Tensor?

    /// PyTorch's default init: U(±1/√in) for weight and bias.
    public init(_ inFeatures: Int, _ outFeatures: Int, bias: Bool = true, rng: inout SeededRNG) {
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(Tensor.uniform([outFeatures, inFeatures], low: -bound, high: bound, rng: &rng))
        self.bias = bias ? Parameter(Tensor.uniform([outFeatures], low: -bound, high: bound, rng: &rng)) : nil
        super.init()
    }

    override public var ownParameters: [(String, Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedInput = x }
        return Ops.linear(x, weight: weight.value, bias: bias?.value, threads: threads)
    }
}

extension Linear: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let x = savedInput else { missingForward(self) }
        savedInput = nil
        weight.accumulateGrad(Ops.linearBackwardWeight(gradOutput, input: x, threads: threads))
        bias?.accumulateGrad(Ops.biasGradient(gradOutput))
        return Ops.linearBackwardInput(gradOutput, weight: weight.value, threads: threads)
    }
}
