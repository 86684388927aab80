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
}
