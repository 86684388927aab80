import DynamicCore
import DynamicNN
import EarlyExit
import XCTest

/// The budgeted search of `adaptive_inference.py` on a table small enough to work by hand.
final class BudgetedEvaluationTests: XCTestCase {
    // 6 samples, 3 exits.
    let scores = ExitScores(confidence: [[0.9, 0.5, 0.8, 0.3, 0.95, 0.6],
                                         [0.7, 0.6, 0.9, 0.4, 0.5, 0.8],
                                         [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]],
                            prediction: [[1, 0, 2, 0, 3, 0], [0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0]],
                            labels: [1, 1, 2, 0, 0, 1])

    func testThresholdsAndScoreByHand() {
        // Exit 0: quota ⌊6·0.5⌋ = 3 → the 3rd most confident (0.95, 0.9, 0.8): T₀ = 0.8, samples
        // 4, 0, 2 leave. Exit 1: quota ⌊6·0.3⌋ = 1 among the rest, by exit-1 confidence: sample 5
        // (sample 2, at 0.9, has left): T₁ = 0.8. The last exit takes samples 1 and 3.
        let t = BudgetedEvaluation.thresholds(scores, shares: [0.5, 0.3, 0.2])
        XCTAssertEqual(t, [0.8, 0.8, -.infinity])
        let r = BudgetedEvaluation.evaluate(scores, thresholds: t, cost: [1, 2, 4])
        XCTAssertEqual(r.exitShares, [3.0 / 6, 1.0 / 6, 2.0 / 6])
        XCTAssertEqual(r.expectedCost, 3.0 / 6 + 2.0 / 6 + 8.0 / 6, accuracy: 1e-12)
        XCTAssertEqual(r.accuracy, 5.0 / 6, accuracy: 1e-12)     // sample 4 leaves at exit 0, wrong
        // A quota of 0 lets nobody leave there.
        XCTAssertEqual(BudgetedEvaluation.thresholds(scores, shares: [0.1, 0.1, 0.8]), [.infinity, .infinity, -.infinity])
    }

    func testSharesAndSweep() {
        XCTAssertEqual(BudgetedEvaluation.sweep.count, 39)
        XCTAssertEqual(BudgetedEvaluation.shares(p: 1, exits: 4), [0.25, 0.25, 0.25, 0.25])
        let s = BudgetedEvaluation.shares(p: 0.5, exits: 3)          // 1/2, 1/4, 1/8 over 7/8
        for (a, b) in zip(s, [4.0 / 7, 2.0 / 7, 1.0 / 7]) { XCTAssertEqual(a, b, accuracy: 1e-6) }
        let points = BudgetedEvaluation.points(validation: scores, test: scores, cost: [1, 2, 4])
        XCTAssertEqual(points.count, 39)
        XCTAssertTrue(points.allSatisfy { $0.expectedCost >= 1 && $0.expectedCost <= 4 && $0.thresholds.count == 2 })
    }

    func testBudgets() throws {
        XCTAssertThrowsError(try BudgetedEvaluation.thresholds(forBudget: 0.5, validation: scores, cost: [1, 2, 4])) {
            XCTAssertEqual($0 as? PolicyError, .budgetBelowCheapest(budget: 0.5, cheapest: 1, unit: "MFLOPs"))
        }
        XCTAssertThrowsError(try BudgetedEvaluation.thresholds(forBudget: .nan, validation: scores, cost: [1, 2, 4]))
        guard case .thresholds(let t) = try BudgetedEvaluation.thresholds(forBudget: 4, validation: scores, cost: [1, 2, 4]) else {
            return XCTFail("thresholds expected")
        }
        XCTAssertLessThanOrEqual(BudgetedEvaluation.evaluate(scores, thresholds: t, cost: [1, 2, 4]).expectedCost, 4)
    }

    func testAnytimeAndEnsembleAccuracy() {
        // Logits whose softmax is known: exit 0 says class 0 for both samples, exit 1 class 1.
        let a = Tensor(shape: [2, 2], scalars: [2, 0, 2, 0]), b = Tensor(shape: [2, 2], scalars: [0, 3, 0, 3])
        let s = ExitScores(outputs: [a, b], labels: [0, 1])
        XCTAssertEqual(s.accuracy, [0.5, 0.5])
        // Summed softmax: class 1 wins (e³/(1+e³) + 1/(1+e²) > e²/(1+e²) + 1/(1+e³)).
        XCTAssertEqual(s.ensembleAccuracy, [0.5, 0.5])
        XCTAssertEqual(s.confidence[0][0], Float(exp(2.0) / (1 + exp(2.0))), accuracy: 1e-6)
    }
}
