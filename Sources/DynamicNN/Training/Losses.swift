import DynamicCore
import Foundation

/// A scalar loss and its gradient with respect to the tensor it was computed from.
public struct LossValue: Sendable {
    public var value: Float
    /// dL/d(input), same shape as the input.
    public var gradient: Tensor

    public init(value: Float, gradient: Tensor) {
        self.value = value
        self.gradient = gradient
    }
}

/// Losses with their gradients. Each returns the gradient to feed into `backward`.
public enum Loss {
    /// Softmax cross-entropy averaged over the batch, PyTorch's
    /// `F.cross_entropy(logits, labels, label_smoothing=ε)`: the target distribution is
    /// (1 − ε)·onehot(label) + ε/C, loss = −Σ_c target_c·log softmax(logits)_c.
    /// logits: [N, C]; labels: N class indices in 0..<C → gradient [N, C] = (softmax − target)/N.
    public static func crossEntropy(logits: Tensor, labels: [Int], labelSmoothing: Float = 0) -> LossValue {
        precondition(logits.rank == 2 && logits.shape[0] == labels.count && logits.shape[0] > 0,
                     "cross-entropy expects logits [N, C] and N labels, got \(logits.shape) and \(labels.count)")
        precondition(labelSmoothing >= 0 && labelSmoothing <= 1, "label smoothing must be in [0, 1]")
        let (n, c) = (logits.shape[0], logits.shape[1])
        let off = labelSmoothing / Float(c), on = 1 - labelSmoothing + off
        var total = 0.0
        let grad = logits.withUnsafeBufferPointer { lb in
            Tensor(shape: [n, c]) { g in
                for r in 0..<n {
                    let label = labels[r]
                    precondition(label >= 0 && label < c, "label \(label) out of range 0..<\(c)")
                    let row = lb.baseAddress! + r * c, gr = g.baseAddress! + r * c
                    var mx = -Float.infinity
                    for j in 0..<c { mx = Swift.max(mx, row[j]) }
                    var s = 0.0
                    for j in 0..<c { s += Foundation.exp(Double(row[j] - mx)) }
                    let lse = Double(mx) + Foundation.log(s)
                    var rowLoss = 0.0
                    for j in 0..<c {
                        let logp = Double(row[j]) - lse
                        let target = Double(j == label ? on : off)
                        rowLoss -= target * logp
                        gr[j] = Float((Foundation.exp(logp) - target) / Double(n))
                    }
                    total += rowLoss
                }
            }
        }
        return LossValue(value: Float(total / Double(n)), gradient: grad)
    }

    /// Unweighted sum of `crossEntropy` over the exits of a multi-exit network (MSDNet, RANet).
    /// logits[k]: [N, C] → value Σ_k loss_k and gradients[k] with respect to logits[k].
    public static func multiExitCrossEntropy(logits: [Tensor], labels: [Int],
                                             labelSmoothing: Float = 0) -> (value: Float, gradients: [Tensor]) {
        precondition(!logits.isEmpty, "multi-exit loss needs at least one exit")
        let parts = logits.map { crossEntropy(logits: $0, labels: labels, labelSmoothing: labelSmoothing) }
        return (parts.reduce(0) { $0 + $1.value }, parts.map(\.gradient))
    }

    /// L1 penalty λ·Σ|x| (sparsity of gate saliencies); gradient λ·sign(x), 0 at 0 like PyTorch.
    public static func l1(_ x: Tensor, weight lambda: Float) -> LossValue {
        var total = 0.0
        x.withUnsafeBufferPointer { for v in $0 { total += Double(abs(v)) } }
        return LossValue(value: lambda * Float(total), gradient: x.map { $0 > 0 ? lambda : ($0 < 0 ? -lambda : 0) })
    }

    /// A loss coupling several hooked tensors (e.g. the batch activation loss over all gates):
    /// `loss` receives the tensors that passed through `hooks` in the last training-mode
    /// forward and returns the value and one gradient per tensor, which the hooks add during
    /// backward. Returns the value.
    @discardableResult
    public static func joint(_ hooks: [LossHook],
                             _ loss: ([Tensor]) -> (value: Float, gradients: [Tensor])) -> Float {
        let inputs = hooks.map { h in
            guard let x = h.lastInput else { preconditionFailure("Loss.joint: a hook saw no training-mode forward") }
            return x
        }
        let r = loss(inputs)
        precondition(r.gradients.count == hooks.count, "Loss.joint: need one gradient per hook")
        for (h, g) in zip(hooks, r.gradients) { h.addGradient(g) }
        return r.value
    }
}

/// The hook for custom scalar losses: an identity layer that adds a loss's gradient with
/// respect to the tensor flowing through it when the gradient flows back. Either give it a
/// per-tensor loss (evaluated in every training-mode forward; `value` holds the result), or
/// feed it gradients from outside with `addGradient` / `Loss.joint` between forward and
/// backward. Shape: any, unchanged.
public final class LossHook: Module, Differentiable, @unchecked Sendable {
    /// The loss on this tensor alone, or nil for a hook fed through `addGradient`.
    public let loss: (@Sendable (Tensor) -> LossValue)?
    /// The tensor that passed through in the last training-mode forward.
    public private(set) var lastInput: Tensor?
    /// The value of `loss` in the last training-mode forward (0 without a loss).
    public private(set) var value: Float = 0
    private var pendingGradient: Tensor?

    public init(_ loss: (@Sendable (Tensor) -> LossValue)? = nil) {
        self.loss = loss
        super.init()
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        guard isTraining else { return x }
        lastInput = x
        pendingGradient = nil
        value = 0
        if let loss {
            let l = loss(x)
            value = l.value
            addGradient(l.gradient)
        }
        return x
    }

    /// Adds dL_extra/d(input) to what this hook will add in backward. g: the input's shape.
    public func addGradient(_ g: Tensor) {
        precondition(lastInput?.shape == g.shape, "LossHook gradient \(g.shape) does not match its input")
        if pendingGradient == nil { pendingGradient = g } else { pendingGradient! += g }
    }

    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard lastInput != nil else { preconditionFailure("LossHook.backward called without a training-mode forward") }
        lastInput = nil
        defer { pendingGradient = nil }
        return pendingGradient.map { gradOutput + $0 } ?? gradOutput
    }
}

extension Module {
    /// Σ `value` of every per-tensor `LossHook` in the tree, from the last training-mode forward
    /// (add it to the main loss when reporting the total).
    public var hookedLossValue: Float {
        var total: Float = 0
        func visit(_ m: Module) {
            if let h = m as? LossHook { total += h.value }
            for (_, c) in m.children { visit(c) }
        }
        visit(self)
        return total
    }
}
