import DynamicCore
import DynamicNN
import Foundation

// Anytime prediction and budgeted batch classification of an early-exit network, exactly as the
// authors' `adaptive_inference.py` (identical in MSDNet and RANet): exit shares that fall
// geometrically, p^k / Σ_j p^j, for p = i/20, i = 1…39; thresholds found on held-out validation
// outputs; at test time each sample leaves at the first exit whose confidence is >= its
// threshold, and the last exit takes the rest.

/// Every exit's verdict on a labeled set: the largest softmax probability and the predicted class
/// per exit and sample. Build it from the analysis forward's outputs (`AdaptiveAnalysis`).
public struct ExitScores: Sendable {
    /// [exit][sample]
    public var confidence: [[Float]]
    public var prediction: [[Int]]
    /// Softmax probabilities [exit] of [N, classes], for the ensemble accuracy (empty when the
    /// scores were given directly).
    public var probabilities: [Tensor]
    public var labels: [Int]

    /// outputs: every exit's logits [N, classes]; labels: N classes.
    public init(outputs: [Tensor], labels: [Int]) {
        precondition(!outputs.isEmpty && outputs.allSatisfy { $0.rank == 2 && $0.shape[0] == labels.count },
                     "one [N, classes] output per exit for \(labels.count) labels")
        probabilities = outputs.map { Ops.softmax($0) }
        confidence = outputs.map(ExitPolicy.confidence)
        prediction = outputs.map { $0.argmax() }
        self.labels = labels
    }

    /// Scores given directly: confidence and prediction [exit][sample].
    public init(confidence: [[Float]], prediction: [[Int]], labels: [Int]) {
        precondition(!confidence.isEmpty && confidence.count == prediction.count
                     && (confidence + prediction.map { $0.map(Float.init) }).allSatisfy { $0.count == labels.count },
                     "confidence and prediction per exit for \(labels.count) labels")
        (self.confidence, self.prediction, self.labels, probabilities) = (confidence, prediction, labels, [])
    }

    public var exits: Int { confidence.count }
    public var count: Int { labels.count }

    /// The scores of the first n samples (confidence, prediction and labels).
    public func prefix(_ n: Int) -> ExitScores {
        precondition((0...count).contains(n), "prefix of \(n) of \(count) samples")
        return ExitScores(confidence: confidence.map { Array($0.prefix(n)) }, prediction: prediction.map { Array($0.prefix(n)) },
                          labels: Array(labels.prefix(n)))
    }

    /// Top-1 accuracy of every exit alone (anytime prediction).
    public var accuracy: [Double] {
        prediction.map { p in Double(zip(p, labels).filter { $0 == $1 }.count) / Double(Swift.max(count, 1)) }
    }

    /// Accuracy of the ensemble of exits 0…k: argmax of the summed softmax probabilities.
    public var ensembleAccuracy: [Double] {
        precondition(!probabilities.isEmpty, "the ensemble needs the exits' outputs")
        var sum = Tensor(zeros: probabilities[0].shape)
        return probabilities.map { p in
            sum += p
            return Double(zip(sum.argmax(), labels).filter { $0 == $1 }.count) / Double(Swift.max(count, 1))
        }
    }
}

/// One operating point of the budgeted sweep.
public struct BudgetedPoint: Sendable, Codable, Equatable {
    /// The sweep's p (exit shares ∝ p^k).
    public var p: Double
    /// Thresholds per exit but the last (for `ExitPolicy.thresholds`); +∞ where no sample leaves.
    public var thresholds: [Float]
    /// Accuracy on the set the thresholds were found on, and on the set scored.
    public var validationAccuracy: Double
    public var accuracy: Double
    /// Share of the scored samples leaving at each exit.
    public var exitShares: [Double]
    /// Σ_k share_k · cost_k, in the unit of the costs given.
    public var expectedCost: Double
}

public enum BudgetedEvaluation {
    /// The reference sweep's p values: i/20 for i = 1…39.
    public static let sweep: [Double] = (1...39).map { Double($0) / 20 }

    /// Exit shares p^k / Σ_j p^j, k = 1…exits (computed in Float, as the reference does).
    public static func shares(p: Double, exits: Int) -> [Double] {
        let pf = Float(p)
        let w = (1...exits).map { Foundation.exp(Foundation.log(pf) * Float($0)) }
        let total = w.reduce(0, +)
        return w.map { Double($0 / total) }
    }

    /// Thresholds (one per exit; the last is −∞) from a set's confidences: for each exit but the
    /// last, among the samples that have not left, in descending confidence at that exit, the
    /// confidence of the floor(N·share)-th; none leave there (threshold +∞) when that quota is 0
    /// or not reached. `dynamic_eval_find_threshold` of the reference.
    public static func thresholds(_ scores: ExitScores, shares: [Double]) -> [Float] {
        let (k, n) = (scores.exits, scores.count)
        precondition(shares.count == k, "one share per exit")
        var left = [Bool](repeating: false, count: n)
        var t = [Float](repeating: .infinity, count: k)
        for e in 0..<(k - 1) {
            let conf = scores.confidence[e]
            // Descending, ties in index order (a stable sort, as torch's on CPU for these sizes).
            let order = conf.indices.sorted { conf[$0] > conf[$1] || (conf[$0] == conf[$1] && $0 < $1) }
            let quota = Int((Float(n) * Float(shares[e])).rounded(.down))     // float32, as the reference
            var count = 0
            for i in order where !left[i] {
                count += 1
                if count == quota {
                    t[e] = conf[i]
                    break
                }
            }
            for i in 0..<n where conf[i] >= t[e] { left[i] = true }
        }
        t[k - 1] = -.infinity
        return t
    }

    /// Accuracy, exit shares and expected cost of `scores` under thresholds (one per exit, or
    /// one per exit but the last): each sample leaves at the first exit with confidence >= its
    /// threshold, the last takes the rest.
    public static func evaluate(_ scores: ExitScores, thresholds: [Float], cost: [Double])
        -> (accuracy: Double, exitShares: [Double], expectedCost: Double) {
        let k = scores.exits
        precondition(cost.count == k && (thresholds.count == k || thresholds.count == k - 1), "one cost and threshold per exit")
        var hits = 0
        var leaving = [Int](repeating: 0, count: k)
        for i in 0..<scores.count {
            var e = 0
            while e < k - 1 && !(scores.confidence[e][i] >= thresholds[e]) { e += 1 }
            leaving[e] += 1
            if scores.prediction[e][i] == scores.labels[i] { hits += 1 }
        }
        let n = Double(Swift.max(scores.count, 1))
        let shares = leaving.map { Double($0) / n }
        return (Double(hits) / n, shares, zip(shares, cost).reduce(0) { $0 + $1.0 * $1.1 })
    }

    /// The reference's 39 operating points: thresholds from `validation`, scored on `test`.
    /// cost: cumulative cost of each exit (reference MFLOPs, or milliseconds per image).
    public static func points(validation: ExitScores, test: ExitScores, cost: [Double]) -> [BudgetedPoint] {
        sweep.map { p in
            let t = thresholds(validation, shares: shares(p: p, exits: validation.exits))
            let v = evaluate(validation, thresholds: t, cost: cost)
            let r = evaluate(test, thresholds: t, cost: cost)
            return BudgetedPoint(p: p, thresholds: Array(t.dropLast()), validationAccuracy: v.accuracy, accuracy: r.accuracy,
                                 exitShares: r.exitShares, expectedCost: r.expectedCost)
        }
    }

    /// The thresholds for a budget: of the sweep's operating points on `validation`, the most
    /// accurate one whose expected cost there is at most `budget` (in the unit of `cost`).
    /// Throws `PolicyError` for a budget below the first exit's cost or not a number.
    public static func thresholds(forBudget budget: Double, validation: ExitScores, cost: [Double],
                                  unit: String = "MFLOPs") throws(PolicyError) -> ExitPolicy {
        guard !budget.isNaN else { throw .notANumber(what: "budget", index: 0) }
        guard budget >= cost[0] else { throw .budgetBelowCheapest(budget: budget, cheapest: cost[0], unit: unit) }
        var best: (accuracy: Double, thresholds: [Float])?
        for p in sweep {
            let t = thresholds(validation, shares: shares(p: p, exits: validation.exits))
            let v = evaluate(validation, thresholds: t, cost: cost)
            if v.expectedCost <= budget, best.map({ v.accuracy > $0.accuracy }) ?? true { best = (v.accuracy, Array(t.dropLast())) }
        }
        // Below every operating point but above the first exit: everybody leaves there.
        return .thresholds(best?.thresholds ?? Array(repeating: 0, count: validation.exits - 1))
    }
}
