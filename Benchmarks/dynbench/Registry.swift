import DynamicInference
import Foundation

// The one table of networks dynbench builds by name, for `train`, `eval`, `train-bench` and
// `models`: each entry recognises its names, builds the network for a dataset's images, and
// says which input its forward benchmark uses. A new network is a new entry, not a new branch.

/// What an entry builds: the network and what the commands report about it.
struct BuiltModel {
    let name: String
    let network: any TrainableNetwork
    /// Multiply-adds per image of the size it was built for.
    let macsPerImage: Int
    let setThreads: (Int?) -> Void
}

/// Images a network is built for: channels × height × width, `classes` outputs.
struct ImageShape: Equatable, Sendable {
    var channels: Int, height: Int, width: Int, classes: Int
}

struct ModelEntry: Sendable {
    /// How its names read, for the usage text (`resnetN`, `cnn-small`, …).
    let names: String
    let summary: String
    /// The input of its forward benchmark (`dynbench models`), and the names benchmarked by default.
    let benchmarkInput: ImageShape
    let benchmarkNames: [String]
    /// The network for `name` on images of `shape`, nil when `name` is not this entry's; throws
    /// when it is but cannot take those images.
    let build: @Sendable (_ name: String, _ shape: ImageShape, _ options: ModelOptions, _ seed: UInt64) throws -> BuiltModel?
}

/// Options some entries read (`--cnn-stages`, `--cnn-head`, `--preset`).
struct ModelOptions: Sendable {
    var cnn = try! CNNShape()
    /// The configuration of a RANet or MSDNet (their names may also carry it: `ranet_cifar-readme`).
    var preset: String?
}

enum ModelRegistry {
    static let entries: [ModelEntry] = [cifarResNet, imagenetResNet, smallCNN, ranet, msdnet]

    /// The network `name` for images of `shape`.
    static func build(_ name: String, for shape: ImageShape, options: ModelOptions = ModelOptions(),
                      seed: UInt64 = 0) throws -> BuiltModel {
        for entry in entries {
            if let m = try entry.build(name, shape, options, seed) { return m }
        }
        throw CLIError(description: "unknown model \(name); known: " + entries.map(\.names).joined(separator: ", "))
    }

    /// The entry that builds `name` (for its benchmark input).
    static func entry(named name: String) -> ModelEntry? {
        entries.first { (try? $0.build(name, $0.benchmarkInput, ModelOptions(), 0)) != nil }
    }

    // MARK: - Entries

    /// He et al.'s CIFAR ResNets: depth 6n+2 (resnet20, resnet56, …) and ResNet-18.
    static let cifarResNet = ModelEntry(
        names: "resnetN (N = 6n+2) or resnet18, optionally with _cifar", summary: "CIFAR ResNets",
        benchmarkInput: ImageShape(channels: 3, height: 32, width: 32, classes: 10),
        benchmarkNames: ["resnet18_cifar", "resnet56_cifar", "resnet110_cifar"]
    ) { name, shape, _, seed in
        var n = name
        if n.hasSuffix("_cifar") { n = String(n.dropLast(6)) }
        guard n.hasPrefix("resnet"), let d = Int(n.dropFirst(6)), d == 18 || (d >= 8 && (d - 2) % 6 == 0) else { return nil }
        guard shape.channels == 3 else {
            throw CLIError(description: "\(name) takes 3-channel images; use cnn-small for \(shape.channels)-channel data")
        }
        let m = d == 18 ? CIFARResNet.resnet18(classes: shape.classes, seed: seed)
            : CIFARResNet.depth(d, classes: shape.classes, seed: seed)
        return BuiltModel(name: d == 18 ? "resnet18_cifar" : "resnet\(d)", network: m,
                          macsPerImage: m.macsPerImage(height: shape.height, width: shape.width), setThreads: m.setThreads)
    }

    /// torchvision's ImageNet ResNet-18 and ResNet-50.
    static let imagenetResNet = ModelEntry(
        names: "resnet18_imagenet, resnet50_imagenet", summary: "torchvision ImageNet ResNets",
        benchmarkInput: ImageShape(channels: 3, height: 224, width: 224, classes: 1000),
        benchmarkNames: ["resnet18_imagenet", "resnet50_imagenet"]
    ) { name, shape, _, seed in
        guard name == "resnet18_imagenet" || name == "resnet50_imagenet" else { return nil }
        guard shape.channels == 3 else { throw CLIError(description: "\(name) takes 3-channel images") }
        let m: ImageNetResNet = name == "resnet50_imagenet" ? .resnet50(classes: shape.classes, seed: seed)
            : .resnet18(classes: shape.classes, seed: seed)
        return BuiltModel(name: name, network: m, macsPerImage: m.macsPerImage(height: shape.height, width: shape.width),
                          setThreads: { m.threads = $0 })
    }

    /// The small VGG-style CNN (`--cnn-stages`, `--cnn-head`).
    static let smallCNN = ModelEntry(
        names: "cnn-small", summary: "small VGG-style CNN",
        benchmarkInput: ImageShape(channels: 1, height: 28, width: 28, classes: 10), benchmarkNames: []
    ) { name, shape, options, seed in
        guard name == "cnn-small" else { return nil }
        let cnn = options.cnn
        guard min(shape.height, shape.width) >> (cnn.stages.count - 1) >= 1 else {
            throw CLIError(description: "--cnn-stages: \(cnn.stages.count) stages pool \(shape.height)×\(shape.width) images away")
        }
        let m = SmallCNN(inChannels: shape.channels, classes: shape.classes, stages: cnn.stages, head: cnn.head,
                         inputSize: (shape.height, shape.width), seed: seed)
        return BuiltModel(name: name, network: m, macsPerImage: m.macsPerImage(height: shape.height, width: shape.width),
                          setThreads: m.setThreads)
    }
}

extension ModelRegistry {
    /// RANet (Yang et al., CVPR 2020) by preset: `ranet --preset cifar-readme` or `ranet_cifar-readme`.
    static let ranet = earlyExitEntry(family: "ranet", presets: RANetConfig.presetNames, defaultPreset: "cifar-readme") {
        preset, classes, seed throws in
        guard let c = RANetConfig.preset(preset, classes: classes) else { return nil }
        return try RANet(c, seed: seed)
    }

    /// MSDNet (Huang et al., ICLR 2018) by preset: `msdnet --preset cifar-anytime` or `msdnet_cifar-anytime`.
    static let msdnet = earlyExitEntry(family: "msdnet", presets: MSDNetConfig.presetNames, defaultPreset: "cifar-budgeted") {
        preset, classes, seed throws in
        guard let c = MSDNetConfig.preset(preset, classes: classes) else { return nil }
        return try MSDNet(c, seed: seed)
    }

    /// An entry for a family of early-exit networks named `family` or `family_PRESET`.
    static func earlyExitEntry(family: String, presets: [String], defaultPreset: String,
                               make: @escaping @Sendable (String, Int, UInt64) throws -> (any TrainableNetwork & AdaptiveModel)?)
        -> ModelEntry {
        ModelEntry(names: "\(family) (--preset \(presets.joined(separator: "|")))", summary: family,
                   benchmarkInput: ImageShape(channels: 3, height: 32, width: 32, classes: 10), benchmarkNames: []) {
            name, shape, options, seed in
            guard name == family || name.hasPrefix(family + "_") else { return nil }
            let preset = name == family ? options.preset ?? defaultPreset : String(name.dropFirst(family.count + 1))
            guard shape.channels == 3 else { throw CLIError(description: "\(family) takes 3-channel images") }
            guard let m = try make(preset, shape.classes, seed) else {
                throw CLIError(description: "\(family) has no preset \(preset); presets: \(presets.joined(separator: ", "))")
            }
            let macs = m.fullCost(height: shape.height, width: shape.width).macs
            return BuiltModel(name: "\(family)_\(preset)", network: m, macsPerImage: macs, setThreads: { _ in })
        }
    }
}

/// cnn-small's architecture: `--cnn-stages` and `--cnn-head`.
struct CNNShape: Sendable {
    static let defaultStages = "32:64:", defaultHead = "flatten:128"
    var stages: [[Int]]
    var head: SmallCNN.Head
    var stagesText: String, headText: String

    init(stages: String = defaultStages, head: String = defaultHead) throws {
        let parsed = stages.split(separator: ":", omittingEmptySubsequences: false).map {
            $0.split(separator: ",").map { Int($0) ?? 0 }
        }
        guard !parsed.joined().isEmpty, parsed.joined().allSatisfy({ $0 > 0 }) else {
            throw CLIError(description: "--cnn-stages wants widths like 32:64:128 or 32,32:64,64, got \(stages)")
        }
        self.stages = parsed
        if head == "gap" {
            self.head = .globalAverage
        } else if head == "flatten" {
            self.head = .flatten(hidden: nil)
        } else if head.hasPrefix("flatten:"), let h = Int(head.dropFirst(8)), h > 0 {
            self.head = .flatten(hidden: h)
        } else {
            throw CLIError(description: "--cnn-head must be gap, flatten or flatten:HIDDEN, got \(head)")
        }
        (stagesText, headText) = (stages, head)
    }
}

/// The datasets `train` and `eval` read, by name.
struct DatasetChoice: Sendable {
    let name: String
    let normalization: Normalization
    let defaultAugmentation: Augmentation
    let load: @Sendable (_ directory: URL, _ train: Bool) throws(DatasetError) -> LabeledImages

    static let all: [DatasetChoice] = [
        DatasetChoice(name: "cifar10", normalization: .cifar10, defaultAugmentation: .cifar) { dir, train throws(DatasetError) in
            try CIFAR10.load(directory: dir, split: train ? .train : .test)
        },
        DatasetChoice(name: "fashion-mnist", normalization: .fashionMNIST, defaultAugmentation: .none) { dir, train throws(DatasetError) in
            try FashionMNIST.load(directory: dir, split: train ? .train : .test)
        },
    ]
    static let aliases = ["cifar-10": "cifar10", "fashionmnist": "fashion-mnist", "fmnist": "fashion-mnist"]

    static func named(_ name: String) throws -> DatasetChoice {
        let canonical = aliases[name] ?? name
        guard let d = all.first(where: { $0.name == canonical }) else {
            throw CLIError(description: "unknown dataset \(name) (" + all.map(\.name).joined(separator: " or ") + ")")
        }
        return d
    }

    func load(_ dir: URL, train: Bool) throws(DatasetError) -> LabeledImages { try load(dir, train) }
}
