import DynamicCore
import DynamicNN
import Foundation

/// A network with early exits whose deployment forward stops each sample at its exit.
public protocol EarlyExitNetwork: AdaptiveModel where Decision == ExitDecision, Policy == ExitPolicy {
    /// Exits, the last classifier included.
    var exitCount: Int { get }
    /// Trainable parameters of everything that runs up to each exit, cumulative.
    var exitParameterCounts: [Int] { get }
}

/// When the samples of an early-exit network leave (MSDNet/RANet `adaptive_inference.py`): at
/// the first exit whose confidence — the largest softmax probability — is at least that exit's
/// threshold (`>=`); the last exit takes every sample still running.
public enum ExitPolicy: Sendable, Equatable {
    /// One threshold per exit but the last (K − 1 values for K exits). +∞ never leaves there;
    /// 0 (or −∞) leaves there always.
    case thresholds([Float])
    /// Every sample leaves at exit k (0-based).
    case exit(Int)
    /// No sample leaves early: every one runs to the last exit.
    case last

    /// Throws `PolicyError` unless the policy fits a network of `exits` exits.
    public func validate(exits: Int) throws(PolicyError) {
        switch self {
        case .thresholds(let t): try PolicyError.check(t, "exit thresholds", count: exits - 1)
        case .exit(let k):
            guard (0..<exits).contains(k) else { throw .outOfRange(what: "exit", index: 0, value: Double(k), range: "0...\(exits - 1)") }
        case .last: break
        }
    }

    /// Which rows of `logits` [n, classes] (exit `exit` of `exits`) leave there, which go on,
    /// and every row's confidence.
    public func split(_ logits: Tensor, exit: Int, exits: Int) -> (leave: [Int], stay: [Int], confidence: [Float]) {
        let confidence = Self.confidence(logits)
        let rows = 0..<confidence.count
        let leavesAll: Bool?
        switch self {
        case .last: leavesAll = exit == exits - 1
        case .exit(let k): leavesAll = exit >= k
        case .thresholds: leavesAll = exit == exits - 1 ? true : nil
        }
        if let leavesAll { return leavesAll ? (Array(rows), [], confidence) : ([], Array(rows), confidence) }
        guard case .thresholds(let t) = self else { preconditionFailure() }
        var leave: [Int] = [], stay: [Int] = []
        for r in rows { if confidence[r] >= t[exit] { leave.append(r) } else { stay.append(r) } }
        return (leave, stay, confidence)
    }

    /// The largest softmax probability of each row of logits [n, classes]: 1 / Σ exp(z − max z).
    public static func confidence(_ logits: Tensor) -> [Float] {
        precondition(logits.rank == 2, "logits must be [N, classes], got \(logits.shape)")
        let (n, k) = (logits.shape[0], logits.shape[1])
        return logits.withUnsafeBufferPointer { z in
            (0..<n).map { r in
                let row = z.baseAddress! + r * k
                var m = -Float.infinity
                for j in 0..<k { m = Swift.max(m, row[j]) }
                var sum: Float = 0
                for j in 0..<k { sum += exp(row[j] - m) }
                return 1 / sum
            }
        }
    }
}

/// Where one sample of an early-exit network left, and how sure it was there.
public struct ExitDecision: Sendable, Equatable, Hashable {
    /// The exit (0-based) whose logits are the sample's prediction.
    public var exit: Int
    /// Its largest softmax probability at that exit.
    public var confidence: Float

    public init(exit: Int, confidence: Float) {
        (self.exit, self.confidence) = (exit, confidence)
    }
}

/// Collects the logits and exits of the samples as they leave an early-exit network's
/// deployment forward, in input order (the leavers are never scattered back into a batch).
public struct ExitRecorder {
    private var logits: [Float]
    private var decisions: [ExitDecision?]
    private var classes: Int?

    /// For a batch of `batch` samples.
    public init(batch: Int) {
        logits = []
        decisions = Array(repeating: nil, count: batch)
    }

    /// Rows `rows` of `output` (an exit's logits [n, classes] on the engine) leave at `exit`
    /// with confidences `confidence` (one per row of `output`).
    public mutating func record(_ output: Variable, rows: [Int], exit: Int, confidence: [Float]) {
        let k = output.shape[1]
        if classes == nil {
            classes = k
            logits = Array(repeating: 0, count: decisions.count * k)
        }
        precondition(classes == k, "exits with \(classes!) and \(k) classes")
        output.value.withUnsafeBufferPointer { z in
            for r in rows {
                let s = output.samples?[r] ?? r
                precondition(decisions[s] == nil, "sample \(s) left twice")
                decisions[s] = ExitDecision(exit: exit, confidence: confidence[r])
                for j in 0..<k { logits[s * k + j] = z[r * k + j] }
            }
        }
    }

    /// Logits [N, classes] and decisions, once every sample has left.
    public func result() -> (logits: Tensor, decisions: [ExitDecision]) {
        let done = decisions.compactMap { $0 }
        precondition(done.count == decisions.count, "\(decisions.count - done.count) samples never left")
        return (Tensor(shape: [decisions.count, classes ?? 0], scalars: logits), done)
    }
}
