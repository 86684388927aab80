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
