import DynamicCore

/// A layer that can propagate gradients. Protocol contract:
/// - A training-mode forward (`isTraining == true`) caches what `backward` needs; an eval-mode
///   forward caches nothing, and calling `backward` after it is a programmer error.
/// - `backward(gradOutput)` takes dL/d(output) of the most recent training-mode forward
///   (same shape as that output), returns dL/d(input) (same shape as that input), and ADDS
///   the parameter gradients into `Parameter.grad` (allocated on first use). It consumes the
///   cache: one backward per forward.
public protocol Differentiable: Layer {
    func backward(_ gradOutput: Tensor) -> Tensor
    /// The same parameter gradients as `backward`, without dL/d(input) when the layer can skip
    /// it (a network's images need none). Default: `backward`, result discarded.
    func backwardParameters(_ gradOutput: Tensor)
}

extension Differentiable {
    public func backwardParameters(_ gradOutput: Tensor) { _ = backward(gradOutput) }
}

extension Parameter {
    /// grad += g (grad = g when nil). g: same shape as `value`.
    public func accumulateGrad(_ g: Tensor) {
        precondition(g.shape == value.shape, "gradient \(g.shape) does not match parameter \(value.shape)")
        if grad == nil { grad = g } else { grad! += g }
    }
}

extension Module {
    /// Clears the gradient of every parameter of the tree (sets it to nil, like PyTorch's
    /// `zero_grad(set_to_none=True)`): the next backward writes fresh gradients.
    public func zeroGrad() {
        for (_, p) in namedParameters() { p.grad = nil }
    }
}

package func missingForward(_ layer: Any) -> Never {
    preconditionFailure("\(type(of: layer)).backward called without a training-mode forward before it")
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

/// What a training-mode batch norm forward leaves for its backward.
struct BatchNormCache {
    var input: Tensor
    var mean: [Float]
    /// 1/√(σ²_biased + ε) per channel.
    var invStd: [Float]

    /// γ·(x − μ)·invStd + β: the training-mode output, recomputable bit for bit.
    func output(gamma: Tensor, beta: Tensor) -> Tensor {
        let a = BatchNorm2d.affine(gamma: gamma.scalars, beta: beta.scalars, mean: mean, invStd: invStd)
        return Ops.channelAffine(input, scale: a.scale, shift: a.shift)
    }
}

extension BatchNorm2d: Differentiable {
    /// Backward through the batch statistics of the last training-mode forward.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let s = saved else { missingForward(self) }
        saved = nil
        let g = Ops.batchNormTrainingBackward(gradOutput, input: s.input, mean: s.mean, invStd: s.invStd,
                                              gamma: weight.value)
        weight.accumulateGrad(g.gamma)
        bias.accumulateGrad(g.beta)
        return g.input
    }

    /// The output of the last training-mode forward, rebuilt from the cache (for the
    /// activation masks of fused units, without keeping another activation-sized tensor).
    package func recomputedOutput() -> Tensor {
        guard let s = saved else { missingForward(self) }
        return s.output(gamma: weight.value, beta: bias.value)
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

extension ActivationLayer: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let x = savedInput else { missingForward(self) }
        savedInput = nil
        return Ops.activationBackward(gradOutput, input: x, activation)
    }
}

extension MaxPool2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let x = savedInput else { missingForward(self) }
        savedInput = nil
        return Ops.maxPool2dBackward(gradOutput, input: x, config)
    }
}

extension AvgPool2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let shape = savedShape else { missingForward(self) }
        savedShape = nil
        return Ops.avgPool2dBackward(gradOutput, inputShape: shape, config)
    }
}

extension GlobalAvgPool2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let shape = savedShape else { missingForward(self) }
        savedShape = nil
        return Ops.globalAvgPoolBackward(gradOutput, inputShape: shape)
    }
}

extension Flatten: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let shape = savedShape else { missingForward(self) }
        savedShape = nil
        return gradOutput.reshaped(shape)
    }
}

extension Identity: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor { gradOutput }
}

extension Sequential: Differentiable {
    /// Backward through the layers in reverse; every layer must be `Differentiable`.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        layers.reversed().reduce(gradOutput) { g, layer in
            guard let d = layer as? any Differentiable else {
                preconditionFailure("\(type(of: layer)) in Sequential is not Differentiable")
            }
            return d.backward(g)
        }
    }
}

extension ConvBNUnit {
    /// Backward of act(bn(conv(x))) after a training-mode forward; returns dL/dx.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        let g = activation == .identity ? gradOutput
            : Ops.activationBackward(gradOutput, input: bn.recomputedOutput(), activation)
        return conv.backward(bn.backward(g))
    }
}
