import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

/// `SmallCNN` (the `cnn-small` model of `dynbench train`): shapes, keys, gradients, learning.
final class SmallCNNTests: XCTestCase {
    func testDefaultShapesKeysAndBackward() {
        let model = SmallCNN(seed: 1)
        XCTAssertEqual(model.namedParameters().map(\.0).prefix(5),
                       ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var"])
        XCTAssertEqual(model.namedParameters().map(\.0).suffix(4), ["9.weight", "9.bias", "11.weight", "11.bias"])
        XCTAssertEqual(model.macsPerImage(), 32 * 9 * 28 * 28 + 64 * 32 * 9 * 14 * 14 + 3136 * 128 + 128 * 10)
        XCTAssertEqual(model.parameterCount, 32 * 9 + 64 + 64 * 32 * 9 + 128 + 3136 * 128 + 128 + 128 * 10 + 10)
        var rng = SeededRNG(seed: 2)
        let x = Tensor.normal([2, 1, 28, 28], rng: &rng)
        model.train()
        let y = model(x)
        XCTAssertEqual(y.shape, [2, 10])
        let dx = model.backward(Tensor.normal(y.shape, rng: &rng))
        XCTAssertEqual(dx.shape, x.shape)
        for (key, p) in model.namedParameters() where p.isTrainable {
            XCTAssertEqual(p.grad?.shape, p.value.shape, key)
        }
        model.eval()
        XCTAssertEqual(model(x).shape, [2, 10])
        // The average-pool head takes any input size ≥ 2^(stages − 1).
        let gap = SmallCNN(stages: [[4], [8], [8]], head: .globalAverage, seed: 2)
        XCTAssertEqual(gap(Tensor.normal([1, 1, 9, 5], rng: &rng)).shape, [1, 10])
    }

    func testFlattenHeadShapesAndInputGradient() {
        let model = SmallCNN(inChannels: 2, classes: 3, stages: [[4], [5], []], head: .flatten(hidden: 6),
                             inputSize: (12, 8), seed: 3)
        // conv(2→4) pool conv(4→5) pool → [N, 5, 3, 2] → flatten 30 → 6 → 3
        XCTAssertEqual(model.net.layers.compactMap { $0 as? Linear }.map(\.weight.value.shape), [[6, 30], [3, 6]])
        var rng = SeededRNG(seed: 4)
        let x = Tensor.normal([3, 2, 12, 8], rng: &rng)
        let labels = [0, 2, 1]
        model.train()
        let ce = Loss.crossEntropy(logits: model(x), labels: labels)
        let dx = model.backward(ce.gradient)
        XCTAssertEqual(dx.shape, x.shape)
        // Directional derivative of the loss along a random direction matches central differences.
        let v = Tensor.normal(x.shape, rng: &rng)
        let analytic = zip(dx.scalars, v.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
        let h: Float = 1e-3   // a small step: ReLU and max-pool kinks stay uncrossed
        func loss(_ t: Float) -> Double {
            Double(Loss.crossEntropy(logits: model(x.zipMap(v) { $0 + t * $1 }), labels: labels).value)
        }
        let numeric = (loss(h) - loss(-h)) / Double(2 * h)
        XCTAssertEqual(analytic, numeric, accuracy: 0.05 * max(abs(numeric), 1e-2))
    }

    /// A few SGD steps on a fixed synthetic batch lower the loss a lot (backward and the
    /// optimizer agree in sign and scale through every layer).
    func testTrainingStepsLowerTheLoss() {
        var rng = SeededRNG(seed: 5)
        var px = [UInt8](), labels = [Int]()
        for i in 0..<16 {
            let k = i % 4
            labels.append(k)
            for y in 0..<8 { for x in 0..<8 {
                let signal = (k == 0 && y < 4) || (k == 1 && y >= 4) || (k == 2 && x < 4) || (k == 3 && x >= 4) ? 120 : 0
                px.append(UInt8(clamping: Int(rng.next() % 100) + signal))
            } }
        }
        let data = LabeledImages(channels: 1, height: 8, width: 8, classCount: 4, pixels: px, labels: labels)
        let batch = MiniBatches(data, batchSize: 16, normalization: .measured(on: data)).epoch(0)[0]
        let model = SmallCNN(classes: 4, stages: [[8], [16]], head: .flatten(hidden: nil), inputSize: (8, 8), seed: 6)
        let opt = SGD(model.trainableParameters, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: true)
        let losses = (0..<12).map { _ in opt.trainStep(model, images: batch.images, labels: batch.labels).loss }
        XCTAssertLessThan(losses[1], losses[0])
        XCTAssertLessThan(losses.last!, 0.3 * losses[0], "\(losses)")
    }
}
