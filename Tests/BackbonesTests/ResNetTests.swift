import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicNN
import TestSupport
import XCTest

/// The CIFAR ResNets: PyTorch's state_dict keys and sizes, zero-init residuals, the folded
/// eval forward against the unfused one, typed input errors.
final class ResNetTests: XCTestCase {
    func testResNetKeysAndParameterCounts() {
        let r20 = CIFARResNet.depth(20)
        let keys = r20.namedParameters().map(\.0)
        XCTAssertEqual(keys.first, "conv1.weight")
        XCTAssertEqual(Array(keys.prefix(5)), ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"])
        XCTAssertTrue(keys.contains("layer2.0.shortcut.0.weight"))
        XCTAssertTrue(keys.contains("layer3.2.bn2.running_var"))
        XCTAssertFalse(keys.contains("layer1.0.shortcut.0.weight"), "identity shortcut has no parameters")
        XCTAssertEqual(keys.suffix(2), ["linear.weight", "linear.bias"])
        XCTAssertEqual(r20.parameterCount, 272_474)
        XCTAssertEqual(CIFARResNet.resnet18().parameterCount, 11_173_962)
        XCTAssertEqual(CIFARResNet.depth(56).parameterCount, 853_018 + 2_752)
        // netspec FLOPs (2 × MACs of convs and FC): ResNet-18 1.111 G, ResNet-56 0.2515 G, ResNet-110 0.506 G.
        XCTAssertEqual(Double(2 * CIFARResNet.resnet18().macsPerImage()) / 1e9, 1.111, accuracy: 0.001)
        XCTAssertEqual(Double(2 * CIFARResNet.depth(56).macsPerImage()) / 1e9, 0.2515, accuracy: 0.0005)
        XCTAssertEqual(Double(2 * CIFARResNet.depth(110).macsPerImage()) / 1e9, 0.506, accuracy: 0.001)
    }

    func testZeroInitResidualsMakesEveryBlockItsShortcut() {
        let m = CIFARResNet.depth(8, seed: 4)
        m.zeroInitResiduals()
        var rng = SeededRNG(seed: 5)
        var blocks = 0
        for stage in m.stages {
            for block in stage {
                blocks += 1
                let x = Tensor.normal([2, block.conv1.config.inChannels, 8, 8], rng: &rng)
                let shortcut = block.shortcut.isEmpty ? x : block.shortcut(x)
                XCTAssertEqual(block(x).maxAbsDifference(Ops.relu(shortcut)), 0, "training-mode block")
                XCTAssertEqual(block.bn1.weight.value[0], 1, "only the branch's last γ is zeroed")
            }
        }
        XCTAssertEqual(blocks, 3)
        XCTAssertEqual(m.bn1.weight.value[0], 1, "stem batch norm untouched")
    }

    func testFoldedEvalForwardMatchesUnfusedAndTracksParameterChanges() {
        let m = CIFARResNet.depth(8).eval()
        var rng = SeededRNG(seed: 2)
        for (_, p) in m.namedParameters() where p.value.rank == 1 {
            p.value = Tensor.uniform(p.shape, low: 0.5, high: 1.5, rng: &rng)
        }
        let x = Tensor.normal([2, 3, 16, 16], rng: &rng)
        let before = m(x)
        XCTAssertLessThan(before.maxRelativeError(ResNetFixtureTests.unfusedForward(m, x)), 1e-5)
        // Changing a BN buffer must invalidate the cached folded weights.
        m.bn1.runningMean.value = Tensor(shape: [16], repeating: 0.3)
        let after = m(x)
        XCTAssertGreaterThan(after.maxAbsDifference(before), 1e-4)
        XCTAssertLessThan(after.maxRelativeError(ResNetFixtureTests.unfusedForward(m, x)), 1e-5)
    }

    func testWrongInputShapeIsATypedError() {
        let m = CIFARResNet.depth(8).eval()
        XCTAssertThrowsError(try m.predict(Tensor(zeros: [2, 1, 32, 32]))) { error in
            XCTAssertEqual(error as? InputError, .shapeMismatch(context: "resnet8_cifar", expected: "[N, 3, H, W]", found: [2, 1, 32, 32]))
        }
        XCTAssertNoThrow(try m.predict(Tensor(zeros: [1, 3, 32, 32])))
    }
}

final class InferencePlanTests: XCTestCase {
    /// The blocked eval path gives bit-identical logits for any thread count and batch split.
    func testEvalLogitsIndependentOfThreadsAndBatching() {
        let m = CIFARResNet.depth(8, seed: 3).eval()
        var rng = SeededRNG(seed: 9)
        for (_, p) in m.namedParameters() where p.value.rank == 1 {
            p.value = Tensor.uniform(p.shape, low: 0.5, high: 1.5, rng: &rng)
        }
        let x = Tensor.normal([5, 3, 12, 10], rng: &rng)
        m.setThreads(1)
        let y1 = m(x)
        for t in [2, 3] {
            m.setThreads(t)
            XCTAssertEqual(m(x).scalars, y1.scalars, "threads \(t)")
        }
        // Each sample alone gives the same logits as inside the batch.
        for i in 0..<5 { XCTAssertEqual(m(x.batch(i)).scalars, y1.batch(i).scalars) }
        // And the blocked plan agrees with the layer-by-layer NCHW path.
        XCTAssertLessThan(y1.maxRelativeError(ResNetFixtureTests.unfusedForward(m, x)), 1e-5)
    }

    /// Batches larger than one micro-batch per worker run depth-first on per-worker plans.
    func testMicroBatchedPathMatchesSingleImages() {
        let m = CIFARResNet.depth(8, seed: 4).eval()
        var rng = SeededRNG(seed: 10)
        let x = Tensor.normal([23, 3, 32, 32], rng: &rng)
        m.setThreads(2)
        let y = m(x)
        m.setThreads(1)
        XCTAssertEqual(m(x).scalars, y.scalars)
        m.setThreads(3)
        XCTAssertEqual(m(x).scalars, y.scalars)
        for i in [0, 7, 22] { XCTAssertEqual(m(x.batch(i)).scalars, y.batch(i).scalars, "sample \(i)") }
        XCTAssertLessThan(y.maxRelativeError(ResNetFixtureTests.unfusedForward(m, x)), 1e-5)
    }
}
