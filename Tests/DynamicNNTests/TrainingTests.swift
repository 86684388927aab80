import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

/// End to end: a small ResNet learns, runs are reproducible, and checkpoints resume exactly.
final class TrainingTests: XCTestCase {
    /// 32 noisy synthetic 8×8 images whose class survives global pooling: classes 0–2 brighten
    /// one colour channel, class 3 has horizontal stripes.
    static func syntheticData(seed: UInt64) -> LabeledImages {
        var rng = SeededRNG(seed: seed)
        var px = [UInt8](), labels = [Int]()
        for i in 0..<32 {
            let k = i % 4
            labels.append(k)
            for c in 0..<3 { for y in 0..<8 { for _ in 0..<8 {
                let signal = k == c || (k == 3 && y % 2 == 0) ? 100 : 0
                px.append(UInt8(clamping: Int(rng.next() % 120) + signal))
            } } }
        }
        return LabeledImages(channels: 3, height: 8, width: 8, classCount: 4, pixels: px, labels: labels)
    }

    func makeRun(seed: UInt64) -> (CIFARResNet, SGD, MiniBatches) {
        let model = CIFARResNet(name: "resnet8", widths: [8, 16], blocksPerStage: [1, 1], classes: 4, seed: seed)
        let opt = SGD(groups: [ParameterGroup(model.trainableParameters, learningRate: 0.05, weightDecay: 5e-4)],
                      momentum: 0.9, nesterov: true)
        let data = Self.syntheticData(seed: 1)
        let batches = MiniBatches(data, batchSize: 8, normalization: .measured(on: data),
                                  augmentation: Augmentation(cropPadding: 1, horizontalFlip: true), shuffle: true, seed: seed)
        return (model, opt, batches)
    }

    /// Steps `range` of the run (4 batches per epoch), with a warm-up + cosine schedule per step.
    func train(_ model: CIFARResNet, _ opt: SGD, _ batches: MiniBatches, steps range: Range<Int>) -> [StepResult] {
        let schedule = LRSchedule.warmup(steps: 2, startFactor: 0.5, then: .cosine(steps: 40, minFactor: 0.01))
        return range.map { step in
            let b = batches.epoch(step / batches.batchCount)[step % batches.batchCount]
            opt.learningRateScale = schedule.factor(at: step)
            return opt.trainStep(model, images: b.images, labels: b.labels)
        }
    }

    func testSmallResNetOverfitsSyntheticDataDeterministically() {
        let (model, opt, batches) = makeRun(seed: 4)
        let results = train(model, opt, batches, steps: 0..<24)
        let first = results.prefix(4).map(\.loss).reduce(0, +) / 4
        let last = results.suffix(4).map(\.loss).reduce(0, +) / 4
        XCTAssertLessThan(last, 0.5 * first, "loss \(first) → \(last)")
        // Eval mode on the training images: BN running statistics and folded weights work too.
        model.eval()
        let all = MiniBatches(batches.data, batchSize: 32, normalization: batches.normalization).epoch(0)[0]
        let accuracy = Float(zip(model(all.images).argmax(), all.labels).filter { $0 == $1 }.count) / 32
        XCTAssertGreaterThanOrEqual(accuracy, 0.9)

        let (model2, opt2, batches2) = makeRun(seed: 4)
        XCTAssertEqual(train(model2, opt2, batches2, steps: 0..<24), results, "same seed, different run")
        XCTAssertEqual(model2.stateDict().mapValues(\.scalars), model.stateDict().mapValues(\.scalars))
    }

    /// k steps, checkpoint, fresh model + optimizer resumed for m steps == k + m steps straight,
    /// bit for bit (weights, BN running statistics, momentum buffers), across an epoch boundary.
    func testCheckpointResumeEqualsUninterruptedTraining() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let (straight, optStraight, batches) = makeRun(seed: 7)
        _ = train(straight, optStraight, batches, steps: 0..<7)

        let (first, optFirst, _) = makeRun(seed: 7)
        _ = train(first, optFirst, batches, steps: 0..<5)
        try Checkpoint.save(model: first, optimizer: optFirst,
                            info: CheckpointInfo(epoch: 1, step: 5, metadata: ["note": "test"]), to: url)

        let (resumed, optResumed, _) = makeRun(seed: 99)   // different init: everything must come from the file
        let info = try Checkpoint.load(from: url, model: resumed, optimizer: optResumed)
        XCTAssertEqual(info, CheckpointInfo(epoch: 1, step: 5, metadata: ["note": "test"]))
        _ = train(resumed, optResumed, batches, steps: info.step..<7)
        XCTAssertEqual(resumed.stateDict().mapValues(\.scalars), straight.stateDict().mapValues(\.scalars))
        XCTAssertEqual(optResumed.stateDict().mapValues(\.scalars), optStraight.stateDict().mapValues(\.scalars))

        let file = try SafeTensors.read(contentsOf: url)
        XCTAssertEqual(file.metadata["format"], Checkpoint.format)
        XCTAssertTrue(file.tensors.keys.contains("model.layer2.0.shortcut.1.running_var"))
        XCTAssertTrue(file.tensors.keys.contains("optimizer.0.momentum_buffer"))
    }

    func testCheckpointErrorsLeaveModelAndOptimizerUnchanged() throws {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        let (model, opt, batches) = makeRun(seed: 3)
        _ = train(model, opt, batches, steps: 0..<1)
        try Checkpoint.save(model: model, optimizer: opt, info: CheckpointInfo(epoch: 0, step: 1), to: url)

        // Drop one model tensor: the optimizer state loads, the model does not, so both roll back.
        var file = try SafeTensors.read(contentsOf: url)
        file.tensors["model.bn1.running_var"] = nil
        try SafeTensors.write(file.tensors, metadata: file.metadata, to: url)
        let (fresh, freshOpt, _) = makeRun(seed: 5)
        let before = fresh.stateDict().mapValues(\.scalars)
        XCTAssertThrowsError(try Checkpoint.load(from: url, model: fresh, optimizer: freshOpt)) { error in
            guard case .model = error as? CheckpointError else { return XCTFail("\(error)") }
        }
        XCTAssertEqual(fresh.stateDict().mapValues(\.scalars), before)
        XCTAssertTrue(freshOpt.stateDict().isEmpty)

        // A plain state dict is not a checkpoint.
        try model.save(to: url)
        XCTAssertThrowsError(try Checkpoint.load(from: url, model: model, optimizer: opt)) { error in
            guard case .notACheckpoint(url.path, _) = error as? CheckpointError else { return XCTFail("\(error)") }
        }
    }
}
