import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

/// A two-exit network with a gate penalty, to train through `Trainer` as MSDNet/RANet and gated
/// networks will: exits after the stem and after a block, and an L1 term on a sigmoid-free gate.
private final class TwoExitNet: Module, TrainableNetwork {
    let stem: ConvBNUnit, block: BasicBlock, head1: Linear, head2: Linear, gate: Linear
    private var lastGate: Variable?

    init(seed: UInt64) {
        var rng = SeededRNG(seed: seed)
        stem = ConvBNUnit(conv: Conv2d(3, 8, kernelSize: 3, padding: 1, bias: false, rng: &rng), bn: BatchNorm2d(8), activation: .relu)
        block = BasicBlock(8, 8, stride: 1, rng: &rng)
        head1 = Linear(8, 4, rng: &rng)
        head2 = Linear(8, 4, rng: &rng)
        gate = Linear(8, 1, rng: &rng)
    }

    override var children: [(String, Module)] {
        [("conv", stem.conv), ("bn", stem.bn), ("block", block), ("head1", head1), ("head2", head2), ("gate", gate)]
    }

    func outputs(_ x: FeatureMap) -> [Variable] {
        let h = stem(x)
        let pooled = h.globalAveragePooled()
        lastGate = gate(pooled).activated(.relu1)
        return [head1(pooled), head2(block(h).globalAveragePooled())]
    }

    func addAuxiliaryLosses(to objective: inout Objective) {
        if let g = lastGate { objective.add(g, Loss.l1(g.value, weight: 0.01), name: "gate L1") }
    }
}

final class TrainerTests: XCTestCase {
    private func data(seed: UInt64) -> LabeledImages { TrainingTests.syntheticData(seed: seed) }

    /// Four epochs, one of warm-up, exits weighted ½ and 1, 2 threads, quiet.
    private func trainer(_ net: TwoExitNet) -> Trainer {
        var options = TrainingOptions()
        options.epochs = 4
        options.warmupEpochs = 1
        options.outputWeights = [0.5, 1]
        options.threads = 2
        options.showsProgress = false
        let trainer = Trainer(network: net, optimizer: SGD(net.trainableParameters, learningRate: 0.05, momentum: 0.9),
                              options: options)
        trainer.config = ["run": "two-exit"]
        return trainer
    }

    /// `Trainer.step` is the library's `trainStep` for engine networks: the same updates, bit for bit.
    func testStepEqualsTrainStep() {
        let a = CIFARResNet(name: "r", widths: [8, 16], blocksPerStage: [1, 1], classes: 4, seed: 3)
        let b = CIFARResNet(name: "r", widths: [8, 16], blocksPerStage: [1, 1], classes: 4, seed: 3)
        let optA = SGD(a.trainableParameters, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: true)
        let optB = SGD(b.trainableParameters, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: true)
        var options = TrainingOptions()
        options.threads = 2
        options.labelSmoothing = 0.1
        let trainer = Trainer(network: a, optimizer: optA, options: options)
        b.setThreads(2)
        let batches = MiniBatches(data(seed: 1), batchSize: 8, normalization: .cifar10, shuffle: true, seed: 2)
        for k in 0..<3 {
            let batch = batches.epoch(0)[k]
            let r1 = trainer.step(batch)
            let r2 = optB.trainStep(b, images: batch.images, labels: batch.labels, labelSmoothing: 0.1)
            XCTAssertEqual(r1, r2)
        }
        XCTAssertEqual(a.stateDict().mapValues(\.scalars), b.stateDict().mapValues(\.scalars))
    }

    /// Two exits and a gate penalty: the log has every exit's accuracy, the objective includes the
    /// penalty, and a run stopped after 2 of 4 epochs and resumed ends exactly where the straight run does.
    func testMultiExitFitLogsExitsAndResumesExactly() throws {
        let train = data(seed: 4), val = data(seed: 5)
        let dirs = (0..<2).map { FileManager.default.temporaryDirectory.appendingPathComponent("trainer-\($0)-\(UUID())") }
        defer { dirs.forEach { try? FileManager.default.removeItem(at: $0) } }
        let batches = MiniBatches(train, batchSize: 8, normalization: .cifar10, augmentation: .cifar, shuffle: true,
                                  dropLast: true, seed: 9)
        func run(dir: URL, resume: Bool) throws -> (TwoExitNet, [EpochRecord]) {
            let net = TwoExitNet(seed: 7)
            return (net, try trainer(net).fit(train: batches, validation: MiniBatches(val, batchSize: 16, normalization: .cifar10),
                                              test: MiniBatches(val, batchSize: 16, normalization: .cifar10),
                                              outputDirectory: dir, resume: resume))
        }
        let (straight, log) = try run(dir: dirs[0], resume: false)
        XCTAssertEqual(log.count, 4)
        XCTAssertEqual(log.last?.val_acc_exits?.count, 2, "per-exit accuracy")
        XCTAssertEqual(log.last?.val_acc, log.last?.val_acc_exits?.last)
        let csv = try String(contentsOf: dirs[0].appendingPathComponent("log.csv"), encoding: .utf8)
        XCTAssertTrue(csv.hasPrefix("epoch,elapsed_s,train_loss,train_acc,val_acc,test_acc,val_acc_exit0,val_acc_exit1,test_acc_exit0,test_acc_exit1\n"))

        let net = TwoExitNet(seed: 7)
        let first = trainer(net), opt = first.optimizer
        // Two epochs by hand through `step`, checkpointed as fit does, stand for an interrupted run.
        let schedule = Trainer.schedule(first.options, warmupSteps: batches.batchCount, totalSteps: 4 * batches.batchCount)
        for epoch in 0..<2 {
            let at = batches.batches(ofEpoch: epoch)
            for k in 0..<batches.batchCount {
                opt.learningRateScale = schedule.factor(at: epoch * batches.batchCount + k)
                first.step(at(k))
            }
        }
        try FileManager.default.createDirectory(at: dirs[1], withIntermediateDirectories: true)
        try Checkpoint.save(model: net, optimizer: opt, info: CheckpointInfo(epoch: 2, step: 2 * batches.batchCount,
                                                                             metadata: first.config), to: dirs[1].appendingPathComponent("checkpoint.safetensors"))
        let (resumed, resumedLog) = try run(dir: dirs[1], resume: true)
        XCTAssertEqual(resumedLog.map(\.epoch), [3, 4])
        XCTAssertEqual(resumed.stateDict().mapValues(\.scalars), straight.stateDict().mapValues(\.scalars),
                       "resumed run differs from the straight one")
        XCTAssertEqual(resumedLog.last?.train_loss, log.last?.train_loss)

        // A checkpoint of another run is refused with a typed error.
        let other = trainer(TwoExitNet(seed: 7))
        other.config = ["run": "something else"]
        XCTAssertThrowsError(try other.fit(train: batches, outputDirectory: dirs[1], resume: true)) { e in
            XCTAssertEqual(e as? TrainingError, .resumeMismatch(key: "run", expected: "something else", found: "two-exit"))
        }
    }

    /// The objective of a step is the weighted cross-entropies plus the network's penalty.
    func testStepLossIncludesWeightsAndPenalty() {
        let net = TwoExitNet(seed: 8)
        var options = TrainingOptions()
        options.outputWeights = [0.5, 1]
        options.threads = 1
        let trainer = Trainer(network: net, optimizer: SGD(net.trainableParameters, learningRate: 0), options: options)
        let batch = MiniBatches(data(seed: 6), batchSize: 8, normalization: .cifar10).epoch(0)[0]
        let r = trainer.step(batch)
        let e = Engine(threads: 1)
        e.begin(batch: 8, recording: false)
        let outs = net.outputs(e.input(batch.images))
        let gate = Ops.activation(Ops.linear(Ops.globalAvgPool(net.stem(batch.images)), weight: net.gate.weight.value,
                                             bias: net.gate.bias!.value), .relu1)
        let expected = 0.5 * Loss.crossEntropy(logits: outs[0].value, labels: batch.labels).value
            + Loss.crossEntropy(logits: outs[1].value, labels: batch.labels).value + Loss.l1(gate, weight: 0.01).value
        XCTAssertEqual(r.loss, expected, accuracy: 1e-4)
    }
}
