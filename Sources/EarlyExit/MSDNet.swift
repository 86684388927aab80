import DynamicCore
import DynamicNN
import Foundation

// MSDNet: Huang, Chen, Li, Wu, van der Maaten and Weinberger, "Multi-Scale Dense Networks for
// Resource Efficient Image Classification", ICLR 2018. Built exactly as the authors' PyTorch
// code (kalviny/MSDNet-PyTorch, `models/msdnet.py`): the same layers, concatenation order,
// transition layers, classifiers and state_dict keys, so its checkpoints load strictly.

/// The arguments of the reference code (`args.py`) that shape the network.
public struct MSDNetConfig: Sendable, Equatable {
    public enum StepMode: String, Sendable { case even, linGrow = "lin_grow" }
    public enum Prune: String, Sendable { case max, min }
    public enum Stem: String, Sendable {
        /// 3×3 convolution at full resolution (CIFAR).
        case cifar
        /// 7×7 stride-2 convolution (with bias) and 3×3 stride-2 max pooling (ImageNet).
        case imagenet
    }

    public var nBlocks: Int
    public var stepMode: StepMode
    public var step: Int
    public var base: Int
    public var nChannels: Int
    public var growthRate: Int
    /// Channel factor per scale; its length is the number of scales.
    public var grFactor: [Int]
    public var bnFactor: [Int]
    public var bottleneck: Bool
    public var reduction: Double
    public var prune: Prune
    public var stem: Stem
    public var classes: Int

    public init(nBlocks: Int, stepMode: StepMode, step: Int, base: Int, nChannels: Int = 16, growthRate: Int = 6,
                grFactor: [Int] = [1, 2, 4], bnFactor: [Int] = [1, 2, 4], bottleneck: Bool = true, reduction: Double = 0.5,
                prune: Prune = .max, stem: Stem = .cifar, classes: Int = 10) {
        (self.nBlocks, self.stepMode, self.step, self.base, self.nChannels, self.growthRate) =
            (nBlocks, stepMode, step, base, nChannels, growthRate)
        (self.grFactor, self.bnFactor, self.bottleneck, self.reduction, self.prune, self.stem, self.classes) =
            (grFactor, bnFactor, bottleneck, reduction, prune, stem, classes)
    }

    public var scales: Int { grFactor.count }

    /// Layers per block: `base`, then `step` (even) or `step·i + 1` (lin_grow).
    public var steps: [Int] {
        [base] + (1..<Swift.max(nBlocks, 1)).map { stepMode == .even ? step : step * $0 + 1 }
    }

    /// The authors' README configurations: `cifar-budgeted` (nBlocks 5, lin_grow, step 1,
    /// base 1), `cifar-anytime` (nBlocks 7, even, step 2, base 4), both nChannels 16; `imagenet`
    /// (nBlocks 5, even, step 4, base 4, nChannels 32, growthRate 16, grFactor and bnFactor 1-2-4-4).
    public static func preset(_ name: String, classes: Int? = nil) -> MSDNetConfig? {
        var c: MSDNetConfig
        switch name {
        case "cifar-budgeted": c = MSDNetConfig(nBlocks: 5, stepMode: .linGrow, step: 1, base: 1)
        case "cifar-anytime": c = MSDNetConfig(nBlocks: 7, stepMode: .even, step: 2, base: 4)
        case "imagenet":
            c = MSDNetConfig(nBlocks: 5, stepMode: .even, step: 4, base: 4, nChannels: 32, growthRate: 16,
                             grFactor: [1, 2, 4, 4], bnFactor: [1, 2, 4, 4], stem: .imagenet, classes: 1000)
        default: return nil
        }
        if let classes { c.classes = classes }
        return c
    }

    public static let presetNames = ["cifar-budgeted", "cifar-anytime", "imagenet"]

    /// Throws `ConfigurationError` for arguments the reference code could not build.
    public func validate() throws(ConfigurationError) {
        func fail(_ why: String) -> ConfigurationError { .invalid(model: "MSDNet", reason: why) }
        guard nBlocks >= 1, step >= 0, base >= 1, nChannels >= 1, growthRate >= 1, classes >= 1 else {
            throw fail("nBlocks, base, nChannels, growthRate and classes must be positive, step ≥ 0")
        }
        guard !grFactor.isEmpty, grFactor.count == bnFactor.count, grFactor.allSatisfy({ $0 >= 1 }), bnFactor.allSatisfy({ $0 >= 1 }) else {
            throw fail("grFactor and bnFactor need one positive factor per scale, as many of each")
        }
        guard reduction >= 0 && reduction <= 1 else { throw fail("reduction must lie in [0, 1]") }
        guard steps.allSatisfy({ $0 >= 1 }) else { throw fail("every block needs at least one layer") }
    }
}

/// A model configuration that cannot be built.
public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
    case invalid(model: String, reason: String)
    case unknownPreset(model: String, name: String, known: [String])

    public var description: String {
        switch self {
        case .invalid(let model, let reason): return "\(model): \(reason)"
        case .unknownPreset(let model, let name, let known): return "\(model): no preset \(name) (known: \(known.joined(separator: ", ")))"
        }
    }
}

/// One step of a block: scale maps in, scale maps out (finest first).
protocol MultiScaleStep: Module {
    func callAsFunction(_ x: [FeatureMap]) -> [FeatureMap]
}

/// `MSDNFirstLayer`: the stem at scale 1, then a 3×3 stride-2 `ConvBasic` per further scale.
final class MSDNetFirstLayer: Module, MultiScaleStep {
    let layers: [Module]

    init(inChannels: Int, _ c: MSDNetConfig, rng: inout SeededRNG) {
        var layers: [Module] = []
        var cin = c.nChannels * c.grFactor[0]
        switch c.stem {
        case .cifar: layers.append(ConvBasic(inChannels, cin, kernel: 3, stride: 1, padding: 1, rng: &rng))
        case .imagenet: layers.append(ImageNetStem(inChannels, cin, rng: &rng))
        }
        for s in 1..<c.scales {
            let cout = c.nChannels * c.grFactor[s]
            layers.append(ConvBasic(cin, cout, kernel: 3, stride: 2, padding: 1, rng: &rng))
            cin = cout
        }
        self.layers = layers
    }

    override var children: [(String, Module)] { [("layers", ModuleGroup(list: layers))] }

    func callAsFunction(_ x: [FeatureMap]) -> [FeatureMap] {
        var h = x[0]
        return layers.map { layer in
            if let stem = layer as? ImageNetStem { h = stem(h) } else { h = (layer as! ConvBasic)(h) }
            return h
        }
    }
}

/// The ImageNet stem: 7×7 stride-2 convolution with bias, batch norm, ReLU, 3×3 stride-2 max
/// pooling (keys `0.weight`, `0.bias`, `1.*`).
final class ImageNetStem: Module {
    let unit: ConvBNUnit

    init(_ inChannels: Int, _ outChannels: Int, rng: inout SeededRNG) {
        unit = ConvBNUnit(conv: Conv2d(inChannels, outChannels, kernelSize: 7, stride: 2, padding: 3, rng: &rng),
                          bn: BatchNorm2d(outChannels), activation: .relu)
    }

    override var children: [(String, Module)] { [("0", unit.conv), ("1", unit.bn)] }

    func callAsFunction(_ x: FeatureMap) -> FeatureMap { unit(x).maxPooled(Pool2DConfig(kernelSize: 3, stride: 2, padding: 1)) }
}

/// `ConvNormal`: [x, conv(x)] concatenated.
final class ConvNormal: Module {
    let convNormal: MultiScaleConv
    init(_ cin: Int, _ cout: Int, bottleneck: Bool, bnWidth: Int, rng: inout SeededRNG) {
        convNormal = MultiScaleConv(cin, cout, down: false, bottleneck: bottleneck, bnWidth: bnWidth, rng: &rng)
    }
    override var children: [(String, Module)] { [("conv_normal", convNormal)] }
    func callAsFunction(_ x: FeatureMap) -> FeatureMap { FeatureMap.concat([x, convNormal(x)]) }
}

/// `ConvDownNormal`: [x₂, down(x₁), normal(x₂)] concatenated (x₁ the finer scale), Cout/2 each.
final class ConvDownNormal: Module {
    let convDown: MultiScaleConv, convNormal: MultiScaleConv
    init(_ cin1: Int, _ cin2: Int, _ cout: Int, bottleneck: Bool, bnWidth1: Int, bnWidth2: Int, rng: inout SeededRNG) {
        convDown = MultiScaleConv(cin1, cout / 2, down: true, bottleneck: bottleneck, bnWidth: bnWidth1, rng: &rng)
        convNormal = MultiScaleConv(cin2, cout / 2, down: false, bottleneck: bottleneck, bnWidth: bnWidth2, rng: &rng)
    }
    override var children: [(String, Module)] { [("conv_down", convDown), ("conv_normal", convNormal)] }
    func callAsFunction(_ finer: FeatureMap, _ x: FeatureMap) -> FeatureMap {
        FeatureMap.concat([x, convDown(finer), convNormal(x)])
    }
}

/// `MSDNLayer`: growth at every scale kept; with `inScales > outScales` the finest input scale
/// only feeds the first output's strided path and is dropped.
final class MSDNetLayer: Module, MultiScaleStep {
    let layers: [Module]
    let inScales: Int, outScales: Int

    init(_ nIn: Int, _ nOut: Int, _ c: MSDNetConfig, inScales: Int, outScales: Int, rng: inout SeededRNG) {
        (self.inScales, self.outScales) = (inScales, outScales)
        let offset = c.scales - outScales
        var layers: [Module] = []
        if inScales > outScales {
            layers.append(ConvDownNormal(nIn * c.grFactor[offset - 1], nIn * c.grFactor[offset], nOut * c.grFactor[offset],
                                         bottleneck: c.bottleneck, bnWidth1: c.bnFactor[offset - 1], bnWidth2: c.bnFactor[offset],
                                         rng: &rng))
        } else {
            layers.append(ConvNormal(nIn * c.grFactor[offset], nOut * c.grFactor[offset], bottleneck: c.bottleneck,
                                     bnWidth: c.bnFactor[offset], rng: &rng))
        }
        for i in (offset + 1)..<Swift.max(offset + 1, c.scales) {
            layers.append(ConvDownNormal(nIn * c.grFactor[i - 1], nIn * c.grFactor[i], nOut * c.grFactor[i],
                                         bottleneck: c.bottleneck, bnWidth1: c.bnFactor[i - 1], bnWidth2: c.bnFactor[i], rng: &rng))
        }
        self.layers = layers
    }

    override var children: [(String, Module)] { [("layers", ModuleGroup(list: layers))] }

    func callAsFunction(_ x: [FeatureMap]) -> [FeatureMap] {
        let discard = inScales > outScales
        return (0..<outScales).map { i in
            if i == 0 && !discard { return (layers[0] as! ConvNormal)(x[0]) }
            let (finer, own) = discard ? (x[i], x[i + 1]) : (x[i - 1], x[i])
            return (layers[i] as! ConvDownNormal)(finer, own)
        }
    }
}

/// `ParallelModule` of 1×1 `ConvBasic`s: the transition layer after a scale is dropped.
final class MSDNetTransition: Module, MultiScaleStep {
    let convs: [ConvBasic]
    init(_ nIn: Int, _ nOut: Int, outScales: Int, offset: Int, _ c: MSDNetConfig, rng: inout SeededRNG) {
        convs = (0..<outScales).map { i in
            ConvBasic(nIn * c.grFactor[offset + i], nOut * c.grFactor[offset + i], kernel: 1, stride: 1, padding: 0, rng: &rng)
        }
    }
    override var children: [(String, Module)] { [("m", ModuleGroup(list: convs))] }
    func callAsFunction(_ x: [FeatureMap]) -> [FeatureMap] { zip(convs, x).map { $0($1) } }
}

/// `ClassifierModule` on the coarsest scale: two 3×3 stride-2 `ConvBasic`s, 2×2 average
/// pooling, a linear layer. Keys `m.0.*`, `m.1.*`, `linear.*`.
public final class MultiScaleClassifier: Module {
    let convs: [ConvBasic]
    public let linear: Linear

    init(_ nIn: Int, inner: Int, classes: Int, rng: inout SeededRNG) {
        convs = [ConvBasic(nIn, inner, kernel: 3, stride: 2, padding: 1, rng: &rng),
                 ConvBasic(inner, inner, kernel: 3, stride: 2, padding: 1, rng: &rng)]
        linear = Linear(inner, classes, rng: &rng)
    }

    override public var children: [(String, Module)] { [("m", ModuleGroup(list: convs)), ("linear", linear)] }

    /// x: [N, C, H, W] → logits [N, classes].
    public func callAsFunction(_ x: FeatureMap) -> Variable {
        let h = convs[1](convs[0](x)).averagePooled(Pool2DConfig(kernelSize: 2))
        return linear(h.flattened())
    }
}

/// MSDNet (Huang et al., ICLR 2018): multi-scale dense blocks with a classifier after each block.
/// Input [N, 3, H, W] (32×32 CIFAR, 224×224 ImageNet); `outputs` gives every exit's logits
/// [N, classes]; the deployment forward (`infer(_:policy:)`) stops each sample at its exit and
/// runs the next blocks only for the samples still going.
public final class MSDNet: Module, TrainableNetwork {
    public let config: MSDNetConfig
    let blocks: [[MultiScaleStep]]
    public let classifiers: [MultiScaleClassifier]

    public init(_ c: MSDNetConfig, seed: UInt64 = 0) throws(ConfigurationError) {
        try c.validate()
        config = c
        var rng = SeededRNG(seed: seed)
        let steps = c.steps
        let layersAll = steps.reduce(0, +)
        var nIn = c.nChannels, layerCurrent = 0
        var blocks: [[MultiScaleStep]] = [], classifiers: [MultiScaleClassifier] = []
        for b in 0..<c.nBlocks {
            var block: [MultiScaleStep] = b == 0 ? [MSDNetFirstLayer(inChannels: 3, c, rng: &rng)] : []
            for _ in 0..<steps[b] {
                layerCurrent += 1
                var inScales = c.scales, outScales = c.scales
                switch c.prune {
                case .min:
                    inScales = Swift.min(c.scales, layersAll - layerCurrent + 2)
                    outScales = Swift.min(c.scales, layersAll - layerCurrent + 1)
                case .max:
                    let interval = Int((Double(layersAll) / Double(c.scales)).rounded(.up))
                    inScales = c.scales - Swift.max(0, layerCurrent - 2) / interval
                    outScales = c.scales - (layerCurrent - 1) / interval
                }
                block.append(MSDNetLayer(nIn, c.growthRate, c, inScales: inScales, outScales: outScales, rng: &rng))
                nIn += c.growthRate
                let transition: Bool
                switch c.prune {
                case .max: transition = inScales > outScales && c.reduction > 0
                case .min:
                    transition = c.reduction > 0
                        && (layerCurrent == Int(Double(layersAll) / 3) || layerCurrent == Int(2 * Double(layersAll) / 3))
                }
                if transition {
                    let nOut = Int((c.reduction * Double(nIn)).rounded(.down))
                    block.append(MSDNetTransition(nIn, nOut, outScales: outScales, offset: c.scales - outScales, c, rng: &rng))
                    nIn = nOut
                }
            }
            blocks.append(block)
            let channels = nIn * c.grFactor.last!
            classifiers.append(MultiScaleClassifier(channels, inner: c.stem == .cifar ? 128 : channels, classes: c.classes,
                                                    rng: &rng))
        }
        self.blocks = blocks
        self.classifiers = classifiers
        // The reference's `_init_weights` is handed the blocks' and classifiers' submodules
        // (MSDNLayer, ClassifierModule, …), never a Conv2d or BatchNorm2d itself, so it changes
        // nothing: PyTorch's default initialisation, which the layers here use too.
        super.init()
    }

    override public var children: [(String, Module)] {
        [("blocks", ModuleGroup(list: blocks.map { ModuleGroup(list: $0) })), ("classifier", ModuleGroup(list: classifiers))]
    }

    public var exitCount: Int { config.nBlocks }

    /// Parameters of everything that runs up to each exit, that exit's classifier and the
    /// earlier ones included (the reference counter's cumulative figure).
    public var exitParameterCounts: [Int] {
        var total = 0
        return blocks.indices.map { k in
            total += blocks[k].reduce(0) { $0 + $1.parameterCount } + classifiers[k].parameterCount
            return total
        }
    }

    /// Every exit's logits [N, classes] for x [N, 3, H, W], nothing skipped.
    public func outputs(_ x: FeatureMap) -> [Variable] {
        var result: [Variable] = []
        run(x) { logits, _ in
            result.append(logits)
            return nil
        }
        return result
    }

    /// Walks the blocks; after each classifier `visit(logits, exit)` returns the rows that go on
    /// (nil: all). Stops when none do.
    func run(_ x: FeatureMap, _ visit: (Variable, Int) -> [Int]?) {
        var h = [x]
        for (k, block) in blocks.enumerated() {
            for step in block { h = step(h) }
            guard let stay = visit(classifiers[k](h.last!), k) else { continue }
            if stay.isEmpty { return }
            if stay.count < h[0].n { h = h.map { $0.gathering(rows: stay) } }
        }
    }

    public func inferenceMicroBatch(height: Int, width: Int) -> Int { height * width >= 128 * 128 ? 4 : 16 }
}

extension MSDNet: EarlyExitNetwork {
    public typealias Decision = ExitDecision
    public typealias Policy = ExitPolicy

    public var inputChannels: Int { 3 }

    public func validate(_ policy: ExitPolicy) throws(PolicyError) { try policy.validate(exits: exitCount) }

    public func deploy(_ x: FeatureMap, policy: ExitPolicy) -> (logits: Tensor, decisions: [ExitDecision]) {
        var recorder = ExitRecorder(batch: x.n)
        run(x) { logits, exit in
            let split = policy.split(logits.value, exit: exit, exits: exitCount)
            recorder.record(logits, rows: split.leave, exit: exit, confidence: split.confidence)
            return split.stay
        }
        return recorder.result()
    }
}
