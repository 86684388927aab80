import DynamicCore
import Backbones
import DynamicData
import DynamicNN
import XCTest

// The README's engine example, verbatim: it must compile and do what the README says.

final class GatedBlock: Module {
    let gate: Linear, unit1: ConvBNUnit, unit2: ConvBNUnit

    init(channels c: Int, rng: inout SeededRNG) {
        gate = Linear(c, 1, rng: &rng)
        unit1 = ConvBNUnit(conv: Conv2d(c, c, kernelSize: 3, padding: 1, bias: false, rng: &rng),
                           bn: BatchNorm2d(c), activation: .relu)
        unit2 = ConvBNUnit(conv: Conv2d(c, c, kernelSize: 3, padding: 1, bias: false, rng: &rng),
                           bn: BatchNorm2d(c), activation: .identity)
    }

    override var children: [(String, Module)] {   // keys: gate.weight, conv1.weight, bn1.running_mean, …
        [("gate", gate), ("conv1", unit1.conv), ("bn1", unit1.bn), ("conv2", unit2.conv), ("bn2", unit2.bn)]
    }

    /// x: [N, C, H, W] → [N, C, H, W]
    func callAsFunction(_ x: FeatureMap) -> FeatureMap {
        let g = gate(x.globalAveragePooled()).activated(.relu1)          // [N, 1], in [0, 1]
        let rows = g.value.scalars.indices.filter { g.value.scalars[$0] > 0 }
        guard !rows.isEmpty else { return x }                             // nobody runs the block
        let h = unit2(unit1(x.gathering(rows: rows)))                     // compact sub-batch
        return x.adding(h.scaled(by: g.gathering(rows: rows)), atRows: rows)
    }
}

final class ReadmeExampleTests: XCTestCase {
    func testReadmeEngineExample() {
        var rng = SeededRNG(seed: 0)
        let stem = ConvBNUnit(conv: Conv2d(3, 16, kernelSize: 3, padding: 1, bias: false, rng: &rng),
                              bn: BatchNorm2d(16), activation: .relu)
        let block = GatedBlock(channels: 16, rng: &rng), head = Linear(16, 10, rng: &rng)
        let images = Tensor.normal([32, 3, 32, 32], rng: &rng), labels = (0..<32).map { $0 % 10 }

        let engine = Engine(threads: 2)
        engine.begin(batch: 32, recording: true)               // a training step: record the tape
        let logits = head(block(stem(engine.input(images))).globalAveragePooled())
        var loss = Objective()
        loss.add(logits, Loss.crossEntropy(logits: logits.value, labels: labels))
        engine.backward(loss)                                  // gradients into every Parameter.grad
        print(engine.sampleCosts[0])                           // MACs and reference FLOPs sample 0 ran

        XCTAssertEqual(block.namedParameters().map(\.0).prefix(3), ["gate.weight", "gate.bias", "conv1.weight"])
        XCTAssertNotNil(stem.conv.weight.grad)
        XCTAssertNotNil(head.weight.grad)
        // Samples whose gate stayed closed were not charged the block's two convolutions; the
        // gate learns only when some sample ran the block.
        let base = 3 * 16 * 9 * 32 * 32 + 16 + 16 * 10, blockMACs = 2 * 16 * 16 * 9 * 32 * 32
        let costs = engine.sampleCosts.map(\.macs)
        XCTAssertTrue(costs.allSatisfy { $0 == base || $0 == base + blockMACs }, "\(costs)")
        let opened = costs.filter { $0 == base + blockMACs }.count
        XCTAssertEqual(block.gate.weight.grad != nil, opened > 0)
        print("README example: \(opened) of 32 samples ran the gated block")
    }
}

// The README's `Trainer` example, on a small synthetic set instead of CIFAR-10.

final class TinyNet: Module, TrainableNetwork {
    let stem: ConvBNUnit, block: GatedBlock, head: Linear
    init(rng: inout SeededRNG) {
        stem = ConvBNUnit(conv: Conv2d(3, 16, kernelSize: 3, padding: 1, bias: false, rng: &rng),
                          bn: BatchNorm2d(16), activation: .relu)
        block = GatedBlock(channels: 16, rng: &rng)
        head = Linear(16, 10, rng: &rng)
    }
    override var children: [(String, Module)] {
        [("conv", stem.conv), ("bn", stem.bn), ("block", block), ("fc", head)]
    }
    func outputs(_ x: FeatureMap) -> [Variable] { [head(block(stem(x)).globalAveragePooled())] }
}

extension ReadmeExampleTests {
    func testReadmeTrainerExample() throws {
        var rng = SeededRNG(seed: 0)
        var px = [UInt8](), labels = [Int]()
        for i in 0..<64 {
            labels.append(i % 10)
            for _ in 0..<(3 * 8 * 8) { px.append(UInt8(truncatingIfNeeded: rng.next())) }
        }
        let train = LabeledImages(channels: 3, height: 8, width: 8, classCount: 10, pixels: px, labels: labels), test = train
        let runs = FileManager.default.temporaryDirectory.appendingPathComponent("readme-\(UUID())")
        defer { try? FileManager.default.removeItem(at: runs) }

        let net = TinyNet(rng: &rng)
        let trainer = Trainer(network: net, optimizer: SGD(net.trainableParameters, learningRate: 0.1, momentum: 0.9,
                                                           weightDecay: 5e-4))
        trainer.options.epochs = 2
        trainer.options.showsProgress = false
        try trainer.fit(train: MiniBatches(train, batchSize: 16, normalization: .cifar10, augmentation: .cifar,
                                           shuffle: true, dropLast: true),
                        test: MiniBatches(test, batchSize: 500, normalization: .cifar10), outputDirectory: runs)
        XCTAssertEqual(trainer.records.count, 2)
        for file in ["log.csv", "log.json", "checkpoint.safetensors"] {
            XCTAssertTrue(FileManager.default.fileExists(atPath: runs.appendingPathComponent(file).path), file)
        }
        XCTAssertEqual(net.namedParameters().first?.0, "conv.weight")
    }
}
