import DynamicCore

/// A network that spends less on some inputs than on others (DESIGN §3): early-exit networks
/// stop computing a sample at its exit, gated networks skip blocks and channels per sample.
/// Every dynamic network of the library adopts it; dense networks conform trivially.
///
/// Two forwards on the engine:
/// - analysis (`TrainableNetwork.outputs`): nothing skipped, every output the decisions are made
///   from (each exit's logits; soft gates) — what training and threshold calibration use;
/// - deployment (`deploy`): skips what the policy allows. Skipped work is never computed, so the
///   engine's per-sample cost (`Engine.sampleCosts`) is what each sample actually ran.
///
/// Call them through `analyze(_:)` and `infer(_:policy:)`, which check the input and the
/// policy and return typed errors. Run in eval mode (`eval()`): in training mode batch norms
/// take statistics from whichever samples reach them.
public protocol AdaptiveModel: TrainableNetwork {
    /// What was decided for one sample: its exit, its gates.
    associatedtype Decision: Sendable & Equatable
    /// What the deployment forward may skip: thresholds, a budget, gate settings.
    associatedtype Policy: Sendable

    /// The input this network takes, [N, inputChannels, H, W].
    var inputChannels: Int { get }

    /// Throws `PolicyError` for a policy this network cannot run (a NaN threshold, a wrong
    /// count, a budget below what it must spend).
    func validate(_ policy: Policy) throws(PolicyError)

    /// The deployment forward of x [N, C, H, W] on x's engine (a batch begun, not recording),
    /// for a policy `validate` accepted: each sample's logits [N, classes] in input order and its
    /// decision.
    func deploy(_ x: FeatureMap, policy: Policy) -> (logits: Tensor, decisions: [Decision])
}

/// The analysis forward of an `AdaptiveModel`: every output, nothing skipped.
public struct AdaptiveAnalysis: Sendable {
    /// Logits [N, classes] of every output (one per exit), in the network's order.
    public var outputs: [Tensor]
    /// What each sample cost: everything.
    public var costs: [ComputeCost]
}

/// The deployment forward of an `AdaptiveModel`: what it predicted, decided and spent, per sample.
public struct AdaptiveOutput<Decision: Sendable & Equatable>: Sendable {
    /// [N, classes]: each sample's prediction (an early-exit network: the logits of its exit).
    public var logits: Tensor
    /// One per sample, in input order.
    public var decisions: [Decision]
    /// One per sample: the work the engine ran for it (`ComputeCost`).
    public var costs: [ComputeCost]

    /// The mean cost per sample.
    public var meanCost: (macs: Double, referenceFLOPs: Double) {
        let n = Double(Swift.max(costs.count, 1))
        return (Double(costs.reduce(0) { $0 + $1.macs }) / n, Double(costs.reduce(0) { $0 + $1.referenceFLOPs }) / n)
    }
}

/// A policy an adaptive network cannot run.
public enum PolicyError: Error, Equatable, CustomStringConvertible {
    /// `what` needs `expected` values and got `found` (thresholds per exit, gates per block).
    case wrongCount(what: String, expected: Int, found: Int)
    /// Value `index` of `what` is NaN.
    case notANumber(what: String, index: Int)
    /// Value `index` of `what` lies outside `range`.
    case outOfRange(what: String, index: Int, value: Double, range: String)
    /// A budget below the cheapest way to run the network.
    case budgetBelowCheapest(budget: Double, cheapest: Double, unit: String)

    public var description: String {
        switch self {
        case .wrongCount(let what, let expected, let found): return "\(what): expected \(expected) values, got \(found)"
        case .notANumber(let what, let index): return "\(what): value \(index) is NaN"
        case .outOfRange(let what, let index, let value, let range): return "\(what): value \(index) = \(value) is outside \(range)"
        case .budgetBelowCheapest(let budget, let cheapest, let unit):
            return "budget \(budget) \(unit) is below the cheapest way to run the network (\(cheapest) \(unit))"
        }
    }

    /// Checks a list of per-unit values (thresholds, gates): the count, no NaN, each in `range`.
    public static func check(_ values: [Float], _ what: String, count: Int,
                             range: ClosedRange<Float> = -Float.infinity...Float.infinity) throws(PolicyError) {
        guard values.count == count else { throw .wrongCount(what: what, expected: count, found: values.count) }
        for (i, v) in values.enumerated() {
            if v.isNaN { throw .notANumber(what: what, index: i) }
            if !range.contains(v) { throw .outOfRange(what: what, index: i, value: Double(v), range: "\(range)") }
        }
    }
}

extension AdaptiveModel {
    /// The analysis forward of x [N, C, H, W]: every output's logits and the cost per sample.
    /// Throws `InputError` for a wrongly shaped input.
    /// Large batches run in micro-batches on the engine's workers (`Engine.runMicroBatches`).
    public func analyze(_ x: Tensor, engine: Engine = Engine()) throws(InputError) -> AdaptiveAnalysis {
        try checkInput(x)
        let outputs = engine.runMicroBatches(x, microBatch: inferenceMicroBatch(height: x.shape[2], width: x.shape[3]),
                                             outputs: self.outputs)
        return AdaptiveAnalysis(outputs: outputs, costs: engine.sampleCosts)
    }

    /// The deployment forward of x [N, C, H, W] under `policy`: the logits, decisions and cost
    /// of each sample. Throws `InputError` or `PolicyError`; nothing runs then. Large batches run
    /// in micro-batches on the engine's workers, each deciding for its own samples.
    public func infer(_ x: Tensor, policy: Policy, engine: Engine = Engine()) throws -> AdaptiveOutput<Decision> {
        try checkInput(x)
        try validate(policy)
        let parts = engine.runMicroBatches(x, microBatch: inferenceMicroBatch(height: x.shape[2], width: x.shape[3])) {
            self.deploy($0, policy: policy)
        }
        let logits = parts.count == 1 ? parts[0].logits : Tensor.concatBatch(parts.map(\.logits))
        let decisions = parts.flatMap(\.decisions)
        precondition(decisions.count == x.shape[0] && logits.shape.first == x.shape[0], "deploy must answer for every sample")
        return AdaptiveOutput(logits: logits, decisions: decisions, costs: engine.sampleCosts)
    }

    /// What one sample of `height` × `width` costs with nothing skipped, counted by the engine
    /// from an eval-mode analysis forward (the model's mode is restored).
    public func fullCost(height: Int, width: Int) -> ComputeCost {
        let wasTraining = isTraining
        eval()
        defer { train(wasTraining) }
        let engine = Engine(threads: 1)
        engine.begin(batch: 1, recording: false)
        _ = outputs(engine.input(Tensor(zeros: [1, inputChannels, height, width])))
        return engine.sampleCosts[0]
    }

    func checkInput(_ x: Tensor) throws(InputError) {
        guard x.rank == 4, x.shape[0] > 0, x.shape[1] == inputChannels, x.shape[2] > 0, x.shape[3] > 0 else {
            throw .shapeMismatch(context: String(describing: Self.self), expected: "[N, \(inputChannels), H, W]", found: x.shape)
        }
    }
}

/// The decision of a dense network: there is none.
public struct DenseDecision: Sendable, Equatable, Hashable {
    public init() {}
}

/// The policy of a dense network: run everything.
public struct DensePolicy: Sendable, Equatable {
    public init() {}
}

extension AdaptiveModel where Policy == DensePolicy, Decision == DenseDecision {
    public func validate(_ policy: DensePolicy) throws(PolicyError) {}

    /// The network's last output for every sample.
    public func deploy(_ x: FeatureMap, policy: DensePolicy) -> (logits: Tensor, decisions: [Decision]) {
        (outputs(x).last!.value, Array(repeating: DenseDecision(), count: x.n))
    }
}
