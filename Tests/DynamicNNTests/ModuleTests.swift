import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

final class ModuleTests: XCTestCase {
    func testTrainEvalFlagPropagatesAndBatchNormModes() {
        let m = CIFARResNet.depth(8)
        XCTAssertTrue(m.stages[0][0].isTraining)
        m.eval()
        XCTAssertFalse(m.stages[2][0].bn2.isTraining)
        m.train()
        XCTAssertTrue(m.stages[2][0].bn2.isTraining)

        // Training-mode BN normalizes with batch statistics and updates running ones (momentum 0.1, unbiased var).
        var rng = SeededRNG(seed: 1)
        let bn = BatchNorm2d(3)
        let x = Tensor.normal([4, 3, 5, 5], mean: 2, std: 3, rng: &rng)
        let y = bn(x)
        let (mean, variance) = BatchNorm2d.batchStatistics(y)
        for c in 0..<3 {
            XCTAssertEqual(mean[c], 0, accuracy: 1e-5)
            XCTAssertEqual(variance[c], 1, accuracy: 1e-3)
        }
        let (bm, bv) = BatchNorm2d.batchStatistics(x)
        XCTAssertEqual(bn.runningMean.value[0], 0.1 * bm[0], accuracy: 1e-6)
        XCTAssertEqual(bn.runningVar.value[0], 0.9 + 0.1 * bv[0] * 100 / 99, accuracy: 1e-5)
    }

    func testStateDictRoundTripThroughSafetensors() throws {
        let a = CIFARResNet.depth(8, seed: 1), b = CIFARResNet.depth(8, seed: 2)
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("dyn-\(UUID()).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try a.save(to: url, metadata: ["model": "resnet8"])
        let report = try b.load(from: url)
        XCTAssertTrue(report.isClean)
        for ((ka, pa), (kb, pb)) in zip(a.namedParameters(), b.namedParameters()) {
            XCTAssertEqual(ka, kb)
            XCTAssertEqual(pa.value.scalars, pb.value.scalars, ka)
        }
    }

    func testStrictAndNonStrictLoadingReport() throws {
        let m = CIFARResNet.depth(8)
        var sd = m.stateDict()
        let original = m.conv1.weight.value
        sd.removeValue(forKey: "linear.bias")
        sd["extra.weight"] = Tensor(zeros: [2])
        sd["conv1.weight"] = Tensor(zeros: [16, 3, 5, 5])
        sd["bn1.weight"] = Tensor(shape: [16], repeating: 7)
        XCTAssertThrowsError(try m.loadStateDict(sd)) { error in
            guard case StateDictError.incompatible(let r) = error else { return XCTFail("wrong error \(error)") }
            XCTAssertEqual(r.missing, ["linear.bias"])
            XCTAssertEqual(r.unexpected, ["extra.weight"])
            XCTAssertEqual(r.mismatched, [.init(key: "conv1.weight", expected: [16, 3, 3, 3], found: [16, 3, 5, 5])])
        }
        XCTAssertNotEqual(m.bn1.weight.value[0], 7, "a failed strict load changes nothing")
        let r = try m.loadStateDict(sd, strict: false)
        XCTAssertEqual(r.missing, ["linear.bias"])
        XCTAssertEqual(m.bn1.weight.value[0], 7, "non-strict loads what matches")
        XCTAssertEqual(m.conv1.weight.value.scalars, original.scalars, "mis-shaped tensors are never loaded")
    }

    func testSequentialAndSimpleLayers() {
        var rng = SeededRNG(seed: 4)
        let net = Sequential(Conv2d(3, 4, kernelSize: 3, padding: 1, rng: &rng), ActivationLayer.relu(),
                             MaxPool2d(kernelSize: 2), AvgPool2d(kernelSize: 2), GlobalAvgPool2d(),
                             Linear(4, 5, rng: &rng), ActivationLayer.relu1())
        XCTAssertEqual(net.namedParameters().map(\.0), ["0.weight", "0.bias", "5.weight", "5.bias"])
        let y = net(Tensor.normal([2, 3, 8, 8], rng: &rng))
        XCTAssertEqual(y.shape, [2, 5])
        XCTAssert(y.min() >= 0 && y.max() <= 1)
        XCTAssertEqual(Flatten()(Tensor(zeros: [2, 3, 4])).shape, [2, 12])
    }
}
