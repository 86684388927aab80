import Backbones
import DynamicCore
import DynamicNN

/// A CIFAR ResNet (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) with
/// extra classifiers after some of its stages: early exits in the manner of BranchyNet
/// (Teerapittayanon, McDanel and Kung, "BranchyNet: Fast Inference via Early Exiting from Deep
/// Neural Networks", ICPR 2016). Each extra exit is global average pooling + a linear layer on
/// the stage's output (BranchyNet's branches may add convolutions; these are the lightest);
/// the backbone's own classifier is the last exit.
///
/// Keys: the backbone's (`conv1.weight`, `layer1.0.…`, `linear.weight`) plus `exits.{i}.weight`
/// and `exits.{i}.bias`, so a trained backbone's state dict loads into it non-strictly.
///
/// Training (`outputs`): every exit's logits, for a sum of cross-entropies. Deployment
/// (`infer(_:policy:)`): after each exit the samples that leave stop, and the rest go on as a
/// smaller batch — their later stages are never computed.
public final class ResNetWithExits: Module, TrainableNetwork {
    public let backbone: CIFARResNet
    /// The classifiers of the early exits, one per entry of `exitStages`.
    public let heads: ModuleList<Linear>
    /// The stages (0-based) after which an early exit sits, ascending, each before the last stage.
    public let exitStages: [Int]

    /// backbone: any CIFAR ResNet; exitStages: stage indices (0-based, ascending, below the
    /// last) that get an exit.
    public init(backbone: CIFARResNet, exitStages: [Int], seed: UInt64 = 0) {
        precondition(!exitStages.isEmpty && exitStages == exitStages.sorted() && Set(exitStages).count == exitStages.count
                     && exitStages.allSatisfy { $0 >= 0 && $0 < backbone.stages.count - 1 },
                     "exit stages must be distinct, ascending and before the last stage, got \(exitStages)")
        var rng = SeededRNG(seed: seed)
        self.backbone = backbone
        self.exitStages = exitStages
        let classes = backbone.linear.weight.shape[0]
        heads = ModuleList(exitStages.map { s in
            Linear(backbone.stages[s].last!.conv2.config.outChannels, classes, rng: &rng)
        })
        super.init()
    }

    /// ResNet-(6n+2) with an exit after every stage but the last (two early exits).
    public static func depth(_ depth: Int, exitStages: [Int] = [0, 1], classes: Int = 10, seed: UInt64 = 0) -> ResNetWithExits {
        ResNetWithExits(backbone: CIFARResNet.depth(depth, classes: classes, seed: seed), exitStages: exitStages, seed: seed &+ 1)
    }

    override public var children: [(String, Module)] { backbone.children + [("exits", heads)] }

    /// Exits, the backbone's classifier included.
    public var exitCount: Int { exitStages.count + 1 }

    /// Parameters up to each exit: the stem, the stages before it, and every classifier so far.
    public var exitParameterCounts: [Int] {
        var counts: [Int] = [], total = backbone.conv1.parameterCount + backbone.bn1.parameterCount
        for (s, stage) in backbone.stages.enumerated() {
            total += stage.parameterCount
            if let k = exitStages.firstIndex(of: s) { total += heads[k].parameterCount; counts.append(total) }
        }
        return counts + [total + backbone.linear.parameterCount]
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

    /// Walks the network on x; after every exit `visit(logits, exit)` returns the rows (of the
    /// current batch) that go on, or nil for all of them. Stops when none go on.
    private func run(_ x: FeatureMap, _ visit: (Variable, Int) -> [Int]?) {
        var h = backbone.stem(x)
        var exit = 0
        for (s, stage) in backbone.stages.enumerated() {
            for block in stage { h = block(h) }
            let head: Linear
            if s == backbone.stages.count - 1 { head = backbone.linear } else if exit < exitStages.count && exitStages[exit] == s {
                head = heads[exit]
            } else { continue }
            let stay = visit(head(h.globalAveragePooled()), exit)
            exit += 1
            guard let stay else { continue }
            if stay.isEmpty { return }
            if stay.count < h.n { h = h.gathering(rows: stay) }
        }
    }

    public func inferenceMicroBatch(height: Int, width: Int) -> Int { backbone.inferenceMicroBatch(height: height, width: width) }
}

extension ResNetWithExits: EarlyExitNetwork {
    public typealias Decision = ExitDecision
    public typealias Policy = ExitPolicy

    public var inputChannels: Int { 3 }

    public func validate(_ policy: ExitPolicy) throws(PolicyError) { try policy.validate(exits: exitCount) }

    /// The samples that leave at an exit stop there; the others go on as a compact batch.
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
