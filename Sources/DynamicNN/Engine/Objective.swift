import DynamicCore

/// The loss of a recorded forward as a sum of terms on any of its variables — every exit's
/// logits, a gate's output, several gates at once — each with its weight and its gradient.
/// `Engine.backward(objective)` seeds every term's gradient and runs the tape once.
///
///     var loss = Objective()
///     for (k, logits) in exits.enumerated() {
///         loss.add(logits, Loss.crossEntropy(logits: logits.value, labels: labels), weight: weights[k])
///     }
///     loss.add(gate, Loss.l1(gate.value, weight: 1e-4))
///     engine.backward(loss)
public struct Objective {
    /// Σ weight·value over the terms.
    public private(set) var value: Float = 0
    /// Each term's weighted value, by name, in the order added.
    public private(set) var terms: [(name: String, value: Float)] = []
    private(set) var seeds: [(Variable, Tensor)] = []

    public init() {}

    /// Adds weight·loss, a loss computed from `v.value` (`Loss.crossEntropy`, `Loss.l1`, …).
    public mutating func add(_ v: Variable, _ loss: LossValue, weight: Float = 1, name: String = "") {
        precondition(loss.gradient.shape == v.shape, "loss gradient \(loss.gradient.shape) does not match \(v.shape)")
        add([v], value: loss.value, gradients: [loss.gradient], weight: weight, name: name)
    }

    /// Adds weight·L for a loss coupling several variables (the mean activation of all gates):
    /// `gradients[i]` = dL/d`vs[i]`.
    public mutating func add(_ vs: [Variable], value term: Float, gradients: [Tensor], weight: Float = 1, name: String = "") {
        precondition(vs.count == gradients.count, "one gradient per variable")
        value += weight * term
        terms.append((name, weight * term))
        for (v, g) in zip(vs, gradients) {
            precondition(g.shape == v.shape, "gradient \(g.shape) does not match \(v.shape)")
            seeds.append((v, weight == 1 ? g : g.scaled(by: weight)))
        }
    }

    /// Σ_k weights[k]·cross-entropy(outputs[k]) — a multi-exit network's loss (MSDNet and
    /// RANet train with every weight 1). outputs[k]: [N, classes].
    public mutating func addCrossEntropy(_ outputs: [Variable], labels: [Int], weights: [Float]? = nil,
                                         labelSmoothing: Float = 0) {
        let weights = weights ?? [Float](repeating: 1, count: outputs.count)
        precondition(weights.count == outputs.count, "one weight per output")
        for (k, (out, w)) in zip(outputs, weights).enumerated() {
            add(out, Loss.crossEntropy(logits: out.value, labels: labels, labelSmoothing: labelSmoothing), weight: w,
                name: "ce\(k)")
        }
    }
}

extension Engine {
    /// Backward of the recorded forward from every term of `objective`.
    public func backward(_ objective: Objective) { backward(objective.seeds) }

    /// A tensor [N, …] of the batch begun, as a variable that needs no gradient (labels, masks, constants).
    public func variable(_ value: Tensor, samples: [Int]? = nil) -> Variable {
        Variable(engine: self, value: value, samples: samples)
    }
}

extension Variable {
    /// The straight-through estimator: a variable whose forward value is `forward` (a hard
    /// decision such as a one-hot Gumbel sample or a thresholded gate, same shape) and whose
    /// gradient flows to this one unchanged.
    public func straightThrough(forward: Tensor) -> Variable {
        precondition(forward.shape == shape, "straight-through value \(forward.shape) must be \(shape)")
        let out = Variable(engine: engine, value: forward, samples: samples)
        return out.recorded(StraightThroughNode(input: self, output: out))
    }
}

final class StraightThroughNode: TapeNode {
    let input: Variable, output: Variable
    init(input: Variable, output: Variable) { (self.input, self.output) = (input, output) }

    func backward() {
        guard let g = output.gradient, input.requiresGradient else { return }
        input.accumulateGradient(g)
    }
}
