import DynamicCore
import Foundation

/// Parameters that share hyper-parameters (PyTorch's `param_groups`): gates, for example,
/// get their own learning rate and no weight decay.
public struct ParameterGroup {
    public var parameters: [Parameter]
    /// Base learning rate; the rate used in a step is `learningRate · learningRateScale`.
    public var learningRate: Float
    public var weightDecay: Float

    public init(_ parameters: [Parameter], learningRate: Float, weightDecay: Float = 0) {
        precondition(parameters.allSatisfy(\.isTrainable), "a buffer cannot be optimized")
        self.parameters = parameters
        self.learningRate = learningRate
        self.weightDecay = weightDecay
    }
}

/// Optimizer state in a checkpoint that does not fit the optimizer it is loaded into.
public enum OptimizerStateError: Error, Equatable, CustomStringConvertible {
    case unexpectedKey(String)
    case shapeMismatch(key: String, expected: [Int], found: [Int])

    public var description: String {
        switch self {
        case .unexpectedKey(let k): return "optimizer state has unknown entry \"\(k)\" (different optimizer or parameter list?)"
        case .shapeMismatch(let k, let e, let f): return "optimizer state \"\(k)\": expected shape \(e), found \(f)"
        }
    }
}

/// Updates parameters from their accumulated gradients.
///
/// State (momentum buffers, moments, step counts) is keyed by the parameter's position in
/// the concatenated group lists, `"<index>.<name>"`, so it round-trips through a checkpoint
/// as long as the optimizer is rebuilt with the same parameter order.
public protocol Optimizer: AnyObject {
    var groups: [ParameterGroup] { get set }
    /// Multiplies every group's learning rate; set it from an `LRSchedule` before each step.
    var learningRateScale: Double { get set }
    /// One update of every parameter whose `grad` is non-nil (others are skipped, as in PyTorch).
    func step()
    /// The optimizer's state as tensors.
    func stateDict() -> [String: Tensor]
    /// Restores `stateDict()` output; state absent from `tensors` is reset.
    func loadStateDict(_ tensors: [String: Tensor]) throws(OptimizerStateError)
}

extension Optimizer {
    /// Every parameter of every group, in state-key order.
    public var parameters: [Parameter] { groups.flatMap(\.parameters) }

    /// Clears the gradients of every optimized parameter.
    public func zeroGrad() { for p in parameters { p.grad = nil } }

    /// Visits (index, group, parameter, gradient, learning rate) for every parameter with a gradient.
    func forEachGradient(_ body: (Int, ParameterGroup, Parameter, Tensor, Float) -> Void) {
        var index = 0
        for g in groups {
            let lr = Float(Double(g.learningRate) * learningRateScale)
            for p in g.parameters {
                if let grad = p.grad {
                    precondition(grad.shape == p.value.shape, "gradient shape \(grad.shape) ≠ parameter \(p.value.shape)")
                    body(index, g, p, grad, lr)
                }
                index += 1
            }
        }
    }
}

/// Splits "<index>.<name>" and checks the index and shape against the parameter list.
private func decodeStateKey(_ key: String, _ tensor: Tensor, names: Set<String>, parameters: [Parameter],
                            scalar: Set<String> = []) throws(OptimizerStateError) -> (Int, String) {
    let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
    guard parts.count == 2, let i = Int(parts[0]), i >= 0, i < parameters.count, names.contains(parts[1]) else {
        throw .unexpectedKey(key)
    }
    let expected = scalar.contains(parts[1]) ? [1] : parameters[i].value.shape
    guard tensor.shape == expected else { throw .shapeMismatch(key: key, expected: expected, found: tensor.shape) }
    return (i, parts[1])
}

/// Stochastic gradient descent with PyTorch's `torch.optim.SGD` semantics:
/// d = grad + wd·p; with momentum μ: buf = d on the first step, else buf = μ·buf + (1 − dampening)·d;
/// then d = d + μ·buf (Nesterov) or d = buf; p −= lr·d.
public final class SGD: Optimizer {
    public var groups: [ParameterGroup]
    public var learningRateScale: Double = 1
    public let momentum: Float, dampening: Float, nesterov: Bool
    private var buffers: [Int: Tensor] = [:]

    public init(groups: [ParameterGroup], momentum: Float = 0, dampening: Float = 0, nesterov: Bool = false) {
        precondition(!nesterov || (momentum > 0 && dampening == 0), "Nesterov momentum requires a momentum and zero dampening")
        self.groups = groups
        self.momentum = momentum
        self.dampening = dampening
        self.nesterov = nesterov
    }

    /// One group of parameters.
    public convenience init(_ parameters: [Parameter], learningRate: Float, momentum: Float = 0,
                            weightDecay: Float = 0, nesterov: Bool = false) {
        self.init(groups: [ParameterGroup(parameters, learningRate: learningRate, weightDecay: weightDecay)],
                  momentum: momentum, nesterov: nesterov)
    }

    /// One pass per parameter, in place (the momentum buffer and the weights are updated where
    /// they are; PyTorch's arithmetic, operation for operation):
    /// d = g + wd·w; buf = momentum·buf + (1 − dampening)·d (buf = d on the first step);
    /// d = d + momentum·buf (Nesterov) or buf; w = w − lr·d.
    public func step() {
        let (momentum, dampening, nesterov) = (self.momentum, self.dampening, self.nesterov)
        forEachGradient { i, group, p, grad, lr in
            let wd = group.weightDecay
            let first = buffers[i] == nil
            var buf = buffers.removeValue(forKey: i) ?? Tensor(zeros: momentum != 0 ? p.value.shape : [0])
            grad.withUnsafeBufferPointer { g in
                buf.withUnsafeMutableBufferPointer { b in
                    p.value.withUnsafeMutableBufferPointer { w in
                        for k in 0..<w.count {
                            var d = wd == 0 ? g[k] : g[k] + wd * w[k]
                            if momentum != 0 {
                                let nb = first ? d : momentum * b[k] + (1 - dampening) * d
                                b[k] = nb
                                d = nesterov ? d + momentum * nb : nb
                            }
                            w[k] = w[k] - lr * d
                        }
                    }
                }
            }
            if momentum != 0 { buffers[i] = buf }
        }
    }

    public func stateDict() -> [String: Tensor] {
        Dictionary(uniqueKeysWithValues: buffers.map { ("\($0.key).momentum_buffer", $0.value) })
    }

    public func loadStateDict(_ tensors: [String: Tensor]) throws(OptimizerStateError) {
        var restored: [Int: Tensor] = [:]
        let ps = parameters
        for (key, t) in tensors {
            let (i, _) = try decodeStateKey(key, t, names: ["momentum_buffer"], parameters: ps)
            restored[i] = t
        }
        buffers = restored
    }
}

/// Adam (Kingma & Ba) with PyTorch's `torch.optim.Adam` / `AdamW` semantics, per parameter:
/// Adam folds weight decay into the gradient (g += wd·p); AdamW decays decoupled (p ·= 1 − lr·wd).
/// m = β1·m + (1 − β1)·g, v = β2·v + (1 − β2)·g², t += 1,
/// p −= lr/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε).
public final class Adam: Optimizer {
    public var groups: [ParameterGroup]
    public var learningRateScale: Double = 1
    public let beta1: Float, beta2: Float, eps: Float
    /// True for AdamW (decoupled weight decay).
    public let decoupledWeightDecay: Bool
    private struct Moments { var m: Tensor, v: Tensor, step: Int }
    private var state: [Int: Moments] = [:]

    public init(groups: [ParameterGroup], beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
                decoupledWeightDecay: Bool = false) {
        self.groups = groups
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.decoupledWeightDecay = decoupledWeightDecay
    }

    /// One group of parameters (PyTorch's defaults: Adam wd 0, AdamW wd 0.01).
    public convenience init(_ parameters: [Parameter], learningRate: Float = 1e-3, weightDecay: Float = 0,
                            decoupledWeightDecay: Bool = false) {
        self.init(groups: [ParameterGroup(parameters, learningRate: learningRate, weightDecay: weightDecay)],
                  decoupledWeightDecay: decoupledWeightDecay)
    }

    /// AdamW: Adam with decoupled weight decay.
    public static func adamW(_ parameters: [Parameter], learningRate: Float = 1e-3, weightDecay: Float = 1e-2) -> Adam {
        Adam(parameters, learningRate: learningRate, weightDecay: weightDecay, decoupledWeightDecay: true)
    }

    /// One pass per parameter, in place, with PyTorch's arithmetic operation for operation.
    public func step() {
        let (beta1, beta2, eps, decoupled) = (self.beta1, self.beta2, self.eps, decoupledWeightDecay)
        forEachGradient { i, group, p, grad, lr in
            let wd = group.weightDecay
            var s = state.removeValue(forKey: i) ?? Moments(m: Tensor(zeros: p.value.shape), v: Tensor(zeros: p.value.shape), step: 0)
            s.step += 1
            let bc1 = 1 - pow(Double(beta1), Double(s.step)), bc2 = 1 - pow(Double(beta2), Double(s.step))
            let stepSize = Float(Double(lr) / bc1), bc2Sqrt = Float(bc2.squareRoot())
            let decay = 1 - lr * wd
            grad.withUnsafeBufferPointer { gb in
                s.m.withUnsafeMutableBufferPointer { mb in
                    s.v.withUnsafeMutableBufferPointer { vb in
                        p.value.withUnsafeMutableBufferPointer { w in
                            for k in 0..<w.count {
                                var g = gb[k], x = w[k]
                                if wd != 0 {
                                    if decoupled { x = x * decay } else { g = g + wd * x }
                                }
                                let m = mb[k] + (1 - beta1) * (g - mb[k])     // lerp, as PyTorch
                                let v = beta2 * vb[k] + (1 - beta2) * g * g
                                mb[k] = m; vb[k] = v
                                w[k] = x - stepSize * (m / ((v.squareRoot() / bc2Sqrt) + eps))
                            }
                        }
                    }
                }
            }
            state[i] = s
        }
    }

    public func stateDict() -> [String: Tensor] {
        var out: [String: Tensor] = [:]
        for (i, s) in state {
            out["\(i).exp_avg"] = s.m
            out["\(i).exp_avg_sq"] = s.v
            // Exact as a Float up to 2^24 steps.
            out["\(i).step"] = Tensor(shape: [1], scalars: [Float(s.step)])
        }
        return out
    }

    public func loadStateDict(_ tensors: [String: Tensor]) throws(OptimizerStateError) {
        var parts: [Int: [String: Tensor]] = [:]
        let ps = parameters
        for (key, t) in tensors {
            let (i, name) = try decodeStateKey(key, t, names: ["exp_avg", "exp_avg_sq", "step"], parameters: ps,
                                               scalar: ["step"])
            parts[i, default: [:]][name] = t
        }
        var restored: [Int: Moments] = [:]
        for (i, p) in parts {
            guard let m = p["exp_avg"], let v = p["exp_avg_sq"], let step = p["step"] else {
                throw .unexpectedKey("\(i).\(p.keys.sorted().joined(separator: "+")) (incomplete Adam state)")
            }
            restored[i] = Moments(m: m, v: v, step: Int(step.scalars[0]))
        }
        state = restored
    }
}
