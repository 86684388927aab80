import DynamicCore
import DynamicNN
import EarlyExit
import XCTest

/// The README's early-exit example, as written there.
final class ReadmeEarlyExitTests: XCTestCase {
    func testReadmeEarlyExitExample() throws {
        var rng = SeededRNG(seed: 0)
        let images = Tensor.normal([4, 3, 32, 32], rng: &rng)
        let net = ResNetWithExits.depth(56, exitStages: [0, 1])        // exits after stages 1 and 2, and the last
        net.eval()
        let all = try net.analyze(images)                 // every exit's logits [N, 10], nothing skipped
        let out = try net.infer(images, policy: .thresholds([0.9, 0.8]))
        XCTAssertEqual(all.outputs.map(\.shape), [[4, 10], [4, 10], [4, 10]])
        XCTAssertEqual(out.logits.shape, [4, 10])
        XCTAssertEqual(out.decisions.count, 4)
        XCTAssertTrue(out.costs.allSatisfy { $0.macs > 0 && $0.macs <= all.costs[0].macs })
    }

    /// The README's budgeted snippet, on an untrained RANet: the thresholds keep the expected
    /// cost on the validation outputs within the budget, and each sample's cost is its exit's.
    func testReadmeBudgetedExample() throws {
        var rng = SeededRNG(seed: 1)
        let valImages = Tensor.normal([16, 3, 32, 32], rng: &rng), testImages = Tensor.normal([6, 3, 32, 32], rng: &rng)
        let valLabels = (0..<16).map { $0 % 10 }
        let ranet = try RANet(RANetConfig.preset("cifar-readme")!)
        ranet.eval()
        let cost = [8.36, 21.77, 32.84, 41.52, 53.23, 58.92]
        let val = ExitScores(outputs: try ranet.analyze(valImages).outputs, labels: valLabels)
        let policy = try BudgetedEvaluation.thresholds(forBudget: 30, validation: val,   // 30 reference MFLOPs
                                                       cost: cost)
        let out = try ranet.infer(testImages, policy: policy)
        guard case .thresholds(let t) = policy else { return XCTFail("\(policy)") }
        XCTAssertEqual(t.count, 5)
        XCTAssertLessThanOrEqual(BudgetedEvaluation.evaluate(val, thresholds: t, cost: cost).expectedCost, 30)
        XCTAssertEqual(out.logits.shape, [6, 10])
        let perExit = try (0..<6).map { k in try ranet.infer(testImages.batch(0..<1), policy: .exit(k)).costs[0] }
        for (d, c) in zip(out.decisions, out.costs) { XCTAssertEqual(c, perExit[d.exit]) }
        XCTAssertThrowsError(try BudgetedEvaluation.thresholds(forBudget: 5, validation: val, cost: cost))
    }
}
