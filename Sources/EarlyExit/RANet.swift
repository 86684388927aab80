import DynamicCore
import DynamicNN
import Foundation

// RANet: Yang, Han, Chen, Song, Dai and Huang, "Resolution Adaptive Networks for Efficient
// Inference", CVPR 2020. Built exactly as the authors' PyTorch code (yangle15/RANet-pytorch,
// `models/RANet.py`): scale flows from the lowest resolution up, each with dense blocks whose
// early blocks fuse the coarser flow's features (bilinear resizing with `align_corners=True`,
// up and down), transition layers, a classifier after every block a flow adds, and the same
// state_dict keys.

/// The arguments of the reference code (`args.py`) that shape the network.
public struct RANetConfig: Sendable, Equatable {
    public enum StepMode: String, Sendable { case even, lg }

    /// Blocks of the first (coarsest) scale flow; flow i has nBlocks + i·blockStep.
    public var nBlocks: Int
    public var blockStep: Int
    /// Layers of a flow's first block; later blocks: the same (even) or `step` more each (lg).
    public var step: Int
    public var stepMode: StepMode
    /// Resolution level of each flow, coarsest first: 1-2-3 is three flows, each at half the
    /// previous one's resolution; a repeated level keeps the resolution.
    public var scaleList: [Int]
    /// Channel factor per flow (coarsest first).
    public var grFactor: [Int]
    public var bnFactor: [Int]
    public var nChannels: Int
    public var growthRate: Int
    public var compressFactor: Double
    public var reduction: Double
    public var stem: MSDNetConfig.Stem
    public var classes: Int

    public init(nBlocks: Int = 2, blockStep: Int = 2, step: Int, stepMode: StepMode, scaleList: [Int], grFactor: [Int],
                bnFactor: [Int], nChannels: Int = 16, growthRate: Int = 6, compressFactor: Double = 0.25, reduction: Double = 0.5,
                stem: MSDNetConfig.Stem = .cifar, classes: Int = 10) {
        (self.nBlocks, self.blockStep, self.step, self.stepMode, self.scaleList) = (nBlocks, blockStep, step, stepMode, scaleList)
        (self.grFactor, self.bnFactor, self.nChannels, self.growthRate) = (grFactor, bnFactor, nChannels, growthRate)
        (self.compressFactor, self.reduction, self.stem, self.classes) = (compressFactor, reduction, stem, classes)
    }

    public var scales: Int { scaleList.count }

    /// `cifar-readme` (the authors' README: step 2, lg, scale-list 1-2-3, grFactor and bnFactor
    /// 4-2-1), `cifar-script` (`train_cifar.sh`: step 4, even, 1-2-3-3, 4-2-1-1), `imagenet-readme`
    /// (step 8, even, growthRate 16, nChannels 32, 1-2-3-4, 4-2-2-1); all nBlocks 2, block-step 2,
    /// compress-factor 0.25, reduction 0.5.
    public static func preset(_ name: String, classes: Int? = nil) -> RANetConfig? {
        var c: RANetConfig
        switch name {
        case "cifar-readme":
            c = RANetConfig(step: 2, stepMode: .lg, scaleList: [1, 2, 3], grFactor: [4, 2, 1], bnFactor: [4, 2, 1])
        case "cifar-script":
            c = RANetConfig(step: 4, stepMode: .even, scaleList: [1, 2, 3, 3], grFactor: [4, 2, 1, 1], bnFactor: [4, 2, 1, 1])
        case "imagenet-readme":
            c = RANetConfig(step: 8, stepMode: .even, scaleList: [1, 2, 3, 4], grFactor: [4, 2, 2, 1], bnFactor: [4, 2, 2, 1],
                            nChannels: 32, growthRate: 16, stem: .imagenet, classes: 1000)
        default: return nil
        }
        if let classes { c.classes = classes }
        return c
    }

    public static let presetNames = ["cifar-readme", "cifar-script", "imagenet-readme"]

    /// Throws `ConfigurationError` for arguments the reference code could not build.
    public func validate() throws(ConfigurationError) {
        func fail(_ why: String) -> ConfigurationError { .invalid(model: "RANet", reason: why) }
        guard nBlocks >= 1, blockStep >= 0, step >= 1, nChannels >= 1, growthRate >= 1, classes >= 1 else {
            throw fail("nBlocks, step, nChannels, growthRate and classes must be positive, block-step ≥ 0")
        }
        guard !scaleList.isEmpty, grFactor.count == scales, bnFactor.count == scales,
              grFactor.allSatisfy({ $0 >= 1 }), bnFactor.allSatisfy({ $0 >= 1 }) else {
            throw fail("scale-list, grFactor and bnFactor need one positive entry per scale flow")
        }
        guard scaleList.first! >= 1, zip(scaleList, scaleList.dropFirst()).allSatisfy({ $1 == $0 || $1 == $0 + 1 }) else {
            throw fail("scale-list must start at 1 or more and rise by 0 or 1 per flow, got \(scaleList)")
        }
        // A fusion block of one layer fails in the reference code (its last layer's index is unset).
        guard scales == 1 || step >= 2 else { throw fail("step must be ≥ 2 with more than one scale flow") }
        guard compressFactor >= 0 && compressFactor < 1, reduction >= 0 && reduction <= 1 else {
            throw fail("compress-factor must lie in [0, 1) and reduction in [0, 1]")
        }
    }
}

/// `RAFirstLayer`: the stem at the finest resolution, then a `ConvBasic` per coarser flow
/// (stride 2 where the scale level changes). Returns the maps coarsest first.
final class RANetFirstLayer: Module {
    let layers: [Module]

    init(_ c: RANetConfig, rng: inout SeededRNG) {
        let gr = Array(c.grFactor.reversed()), levels = Array(c.scaleList.reversed())
        var cin = c.nChannels * gr[0]
        var layers: [Module] = [c.stem == .cifar ? ConvBasic(3, cin, kernel: 3, stride: 1, padding: 1, rng: &rng)
                                                 : ImageNetStem(3, cin, rng: &rng)]
        var level = levels[0]
        for i in 1..<c.scales {
            let cout = c.nChannels * gr[i]
            layers.append(ConvBasic(cin, cout, kernel: 3, stride: level == levels[i] ? 1 : 2, padding: 1, rng: &rng))
            level = levels[i]
            cin = cout
        }
        self.layers = layers
    }

    override var children: [(String, Module)] { [("layers", ModuleGroup(list: layers))] }

    func callAsFunction(_ x: FeatureMap) -> [FeatureMap] {
        var h = x
        var out: [FeatureMap] = []
        for layer in layers {
            h = (layer as? ImageNetStem)?(h) ?? (layer as! ConvBasic)(h)
            out.append(h)
        }
        return out.reversed()
    }
}

/// x resized to h × w (bilinear, `align_corners=True`); the same size is x itself.
private func resized(_ x: FeatureMap, _ h: Int, _ w: Int) -> FeatureMap {
    x.h == h && x.w == w ? x : x.resized(height: h, width: w)
}

/// `ConvUpNormal`: [x resized, conv_up(coarser) resized, conv_normal(x)] at conv_normal's output
/// size; conv_normal is strided where the flow halves its resolution.
final class ConvUpNormal: Module {
    let convUp: MultiScaleConv, convNormal: MultiScaleConv

    init(_ cin1: Int, _ cin2: Int, _ cout: Int, bnWidth1: Int, bnWidth2: Int, compressFactor: Double, down: Bool,
         rng: inout SeededRNG) {
        let up = Int((Double(cout) * compressFactor).rounded(.down))
        convUp = MultiScaleConv(cin2, up, down: false, bottleneck: true, bnWidth: bnWidth2, rng: &rng)
        convNormal = MultiScaleConv(cin1, cout - up, down: down, bottleneck: true, bnWidth: bnWidth1, rng: &rng)
    }

    override var children: [(String, Module)] { [("conv_up", convUp), ("conv_normal", convNormal)] }

    func callAsFunction(_ coarser: FeatureMap, _ x: FeatureMap) -> FeatureMap {
        let res = convNormal(x)
        return FeatureMap.concat([resized(x, res.h, res.w), resized(convUp(coarser), res.h, res.w), res])
    }
}

/// A block of a scale flow: `_BlockNormal` (no fusion) or `_BlockUpNormal` (fuses the coarser
/// flow's block of the same index). Returns its output and its intermediate maps (input first),
/// which the finer flow's block of the same index fuses.
final class RANetBlock: Module {
    let normal: [ConvNormal]
    let up: [ConvUpNormal]
    let convLast: ConvBasic?
    let transition: ConvBasic?
    /// Output channels (after the transition) and the channels of each intermediate map.
    let outChannels: Int, intermediateChannels: [Int]

    /// `_BlockNormal`.
    init(normal layers: Int, nIn: Int, growth: Int, reduction: Double, transition: Bool, bnFactor: Int, rng: inout SeededRNG) {
        normal = (0..<layers).map { ConvNormal(nIn + $0 * growth, growth, bottleneck: true, bnWidth: bnFactor, rng: &rng) }
        up = []
        convLast = nil
        intermediateChannels = (0...layers).map { nIn + $0 * growth }
        let out = intermediateChannels.last!
        let reduced = Int((reduction * Double(out)).rounded(.down))
        self.transition = transition ? ConvBasic(out, reduced, kernel: 1, stride: 1, padding: 0, rng: &rng) : nil
        outChannels = transition ? reduced : out
    }

    /// `_BlockUpNormal`.
    init(up layers: Int, nIn: Int, coarser: [Int], growth: Int, reduction: Double, transition: Bool, down: Bool,
         compressFactor: Double, bnFactor1: Int, bnFactor2: Int, rng: inout SeededRNG) {
        normal = []
        up = (0..<layers).map { i in
            ConvUpNormal(nIn + i * growth, coarser[i], growth, bnWidth1: bnFactor1, bnWidth2: bnFactor2,
                         compressFactor: compressFactor, down: i == layers - 1 && down, rng: &rng)
        }
        intermediateChannels = (0...layers).map { nIn + $0 * growth }
        var out = intermediateChannels.last!
        let fused = Int((Double(out) * compressFactor).rounded(.down))
        convLast = ConvBasic(coarser[layers], fused, kernel: 1, stride: 1, padding: 0, rng: &rng)
        out += fused
        let reduced = Int((reduction * Double(out)).rounded(.down))
        self.transition = transition ? ConvBasic(out, reduced, kernel: 1, stride: 1, padding: 0, rng: &rng) : nil
        outChannels = transition ? reduced : out
    }

    var isFusion: Bool { !up.isEmpty }

    override var children: [(String, Module)] {
        var c: [(String, Module)] = [("layers", ModuleGroup(list: isFusion ? up : normal))]
        if let convLast { c.append(("conv_last", convLast)) }
        if let transition { c.append(("trans", transition)) }
        return c
    }

    func callAsFunction(_ input: FeatureMap, coarser: [FeatureMap]?) -> (FeatureMap, [FeatureMap]) {
        var x = input
        var outputs = [x]
        if let coarser {
            for (i, layer) in up.enumerated() {
                x = layer(coarser[i], x)
                outputs.append(x)
            }
            x = FeatureMap.concat([x, resized(convLast!(coarser[up.count]), x.h, x.w)])
        } else {
            for layer in normal {
                x = layer(x)
                outputs.append(x)
            }
        }
        return (transition.map { $0(x) } ?? x, outputs)
    }
}

/// RANet (Yang et al., CVPR 2020). Input [N, 3, H, W]; `outputs` gives every exit's logits
/// [N, classes] — the coarsest flow's classifiers first; the deployment forward
/// (`infer(_:policy:)`) stops each sample at its exit and runs the rest only for the samples
/// still going.
public final class RANet: Module, TrainableNetwork {
    public let config: RANetConfig
    let firstLayer: RANetFirstLayer
    let flows: [[RANetBlock]]
    public let classifiers: [MultiScaleClassifier]
    /// Blocks per flow, with a leading 0 (the reference's `nBlocks`).
    let blockCounts: [Int]

    public init(_ c: RANetConfig, seed: UInt64 = 0) throws(ConfigurationError) {
        try c.validate()
        config = c
        var rng = SeededRNG(seed: seed)
        let blockCounts = [0] + (0..<c.scales).map { c.blockStep * $0 + c.nBlocks }
        self.blockCounts = blockCounts
        var steps = [c.step]
        var flows: [[RANetBlock]] = [], classifiers: [MultiScaleClassifier] = []
        var coarserChannels: [[Int]] = []
        for ii in 0..<c.scales {
            var flow: [RANetBlock] = []
            var nIn = c.nChannels * c.grFactor[ii]
            let growth = c.growthRate * c.grFactor[ii]
            for i in 0..<blockCounts[ii + 1] {
                let n = i + 1
                let level = c.scaleList[ii]
                let transition = (0..<Swift.max(0, level - 1)).contains { n == ((($0 + 1) * blockCounts[ii + 1]) / level) }
                let block: RANetBlock
                if n > blockCounts[ii] {
                    block = RANetBlock(normal: steps[n - 1], nIn: nIn, growth: growth, reduction: c.reduction,
                                       transition: transition, bnFactor: c.bnFactor[ii], rng: &rng)
                    steps.append(c.stepMode == .even ? c.step : steps.last! + c.step)
                } else {
                    // Python's `nBlocks[:ii+1][-(level-1):]`: the last level − 1 entries (all for level 1).
                    let prefix = Array(blockCounts[0...ii])
                    let downAt = level - 1 == 0 ? prefix : Array(prefix.suffix(level - 1))
                    block = RANetBlock(up: steps[n - 1], nIn: nIn, coarser: coarserChannels[i], growth: growth,
                                       reduction: c.reduction, transition: transition, down: downAt.contains(n),
                                       compressFactor: c.compressFactor, bnFactor1: c.bnFactor[ii], bnFactor2: c.bnFactor[ii - 1],
                                       rng: &rng)
                }
                nIn = block.outChannels
                flow.append(block)
                if n > blockCounts[ii] {
                    classifiers.append(MultiScaleClassifier(nIn, inner: c.stem == .cifar ? 128 : nIn, classes: c.classes, rng: &rng))
                }
            }
            coarserChannels = flow.map(\.intermediateChannels)
            flows.append(flow)
        }
        firstLayer = RANetFirstLayer(c, rng: &rng)
        self.flows = flows
        self.classifiers = classifiers
        super.init()
        // The reference initialises every convolution N(0, √(2 / (k²·Cout))), every batch norm
        // γ = 1, β = 0 and every linear bias 0, in the scale flows and the classifiers (not the
        // first layer).
        for block in flows.joined() { Self.initialize(block, rng: &rng) }
        for classifier in classifiers { Self.initialize(classifier, rng: &rng) }
    }

    static func initialize(_ m: Module, rng: inout SeededRNG) {
        if let conv = m as? Conv2d {
            let s = conv.weight.shape
            conv.weight.value = Tensor.normal(s, std: Float((2.0 / Double(s[0] * s[2] * s[3])).squareRoot()), rng: &rng)
        } else if let bn = m as? BatchNorm2d {
            bn.weight.value = Tensor(shape: bn.weight.shape, repeating: 1)
            bn.bias.value = Tensor(zeros: bn.bias.shape)
        } else if let linear = m as? Linear, let bias = linear.bias {
            bias.value = Tensor(zeros: bias.shape)
        }
        for (_, child) in m.children { initialize(child, rng: &rng) }
    }

    override public var children: [(String, Module)] {
        [("scale_flows", ModuleGroup(list: flows.map { ModuleGroup(list: $0) })), ("classifier", ModuleGroup(list: classifiers)),
         ("FirstLayer", firstLayer)]
    }

    public var exitCount: Int { classifiers.count }

    /// Parameters of everything that runs up to each exit (the first layer, the blocks in the
    /// order `run` walks them, that exit's classifier and the earlier ones): the reference
    /// counter's cumulative figure.
    public var exitParameterCounts: [Int] {
        var total = firstLayer.parameterCount, counts: [Int] = []
        for (ii, flow) in flows.enumerated() {
            for (i, block) in flow.enumerated() {
                total += block.parameterCount
                if i + 1 > blockCounts[ii] {
                    total += classifiers[counts.count].parameterCount
                    counts.append(total)
                }
            }
        }
        return counts
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

    /// Walks the flows; after each classifier `visit(logits, exit)` returns the rows that go on
    /// (nil: all). Stops when none do; the samples that go on carry every map a later block reads.
    func run(_ x: FeatureMap, _ visit: (Variable, Int) -> [Int]?) {
        var inputs = firstLayer(x)
        var coarser: [[FeatureMap]] = []
        var exit = 0
        for (ii, flow) in flows.enumerated() {
            var h = inputs[ii]
            var intermediates: [[FeatureMap]] = []
            for (i, block) in flow.enumerated() {
                let (out, mids) = block(h, coarser: block.isFusion ? coarser[i] : nil)
                h = out
                intermediates.append(mids)
                guard i + 1 > blockCounts[ii] else { continue }
                let stay = visit(classifiers[exit](h), exit)
                exit += 1
                guard let stay else { continue }
                if stay.isEmpty { return }
                if stay.count < h.n {
                    func keep(_ m: FeatureMap) -> FeatureMap { m.gathering(rows: stay) }
                    h = keep(h)
                    inputs = inputs.enumerated().map { $0.offset > ii ? keep($0.element) : $0.element }
                    // The finer flows read the blocks of this flow and of the one before it
                    // (coarser[i] for the blocks still to come): keep what is still to be read.
                    coarser = coarser.enumerated().map { $0.offset > i ? $0.element.map(keep) : [] }
                    intermediates = intermediates.map { $0.map(keep) }
                }
            }
            coarser = intermediates
        }
    }

    public func inferenceMicroBatch(height: Int, width: Int) -> Int { height * width >= 128 * 128 ? 4 : 16 }
}

extension RANet: EarlyExitNetwork {
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
