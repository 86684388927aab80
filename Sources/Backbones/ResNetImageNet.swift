import DynamicCore
import DynamicNN

// ImageNet ResNets of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
// as torchvision builds them (ResNet v1.5: the stride of a bottleneck on its 3×3 convolution),
// with torchvision's state_dict names, so its weights load as they are.

/// The bottleneck block: conv1×1-BN-ReLU, conv3×3(stride)-BN-ReLU, conv1×1-BN (4× width),
/// + shortcut, ReLU. x: [N, Cin, H, W] → [N, 4·width, H/s, W/s].
/// Keys: `conv1`…`conv3`, `bn1`…`bn3`, `downsample.0` / `downsample.1` for a projection.
public final class Bottleneck: Module {
    public static let expansion = 4
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d, conv3: Conv2d, bn3: BatchNorm2d
    public let downsample: Sequential
    let unit1: ConvBNUnit, unit2: ConvBNUnit, unit3: ConvBNUnit
    let projection: ConvBNUnit?

    public init(_ inChannels: Int, width: Int, stride: Int, rng: inout SeededRNG) {
        let out = Self.expansion * width
        conv1 = Conv2d(inChannels, width, kernelSize: 1, bias: false, rng: &rng)
        bn1 = BatchNorm2d(width)
        conv2 = Conv2d(width, width, kernelSize: 3, stride: stride, padding: 1, bias: false, rng: &rng)
        bn2 = BatchNorm2d(width)
        conv3 = Conv2d(width, out, kernelSize: 1, bias: false, rng: &rng)
        bn3 = BatchNorm2d(out)
        unit1 = ConvBNUnit(conv: conv1, bn: bn1, activation: .relu)
        unit2 = ConvBNUnit(conv: conv2, bn: bn2, activation: .relu)
        unit3 = ConvBNUnit(conv: conv3, bn: bn3, activation: .identity)
        (downsample, projection) = projectionShortcut(inChannels, out, stride: stride, rng: &rng)
        super.init()
    }

    override public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2), ("conv3", conv3), ("bn3", bn3),
         ("downsample", downsample)]
    }

    /// The block on the engine, the add and ReLU fused into the last unit.
    public func callAsFunction(_ x: FeatureMap) -> FeatureMap {
        let mid = unit2(unit1(x))
        let shortcut = projection.map { $0(x) } ?? x
        return unit3(mid, residual: shortcut, activation: .relu)
    }
}

/// torchvision's ResNet-18 / ResNet-50: conv7×7/2 (3 → 64) + BN + ReLU, max pool 3×3/2,
/// stages `layer1…layer4` of widths 64/128/256/512 (BasicBlocks, or Bottlenecks of 4× width),
/// global average pool, `fc`. x: [N, 3, H, W] (224×224 for ImageNet) → logits [N, classes].
/// Keys are torchvision's (`conv1.weight`, `layer1.0.bn2.running_var`, `layer2.0.downsample.0.weight`,
/// `fc.bias`): a `state_dict` saved from torchvision loads strictly.
public final class ImageNetResNet: Module, Layer, Differentiable {
    public enum Blocks { case basic, bottleneck }

    public let conv1: Conv2d, bn1: BatchNorm2d
    public let basicStages: [ModuleList<BasicBlock>]
    public let bottleneckStages: [ModuleList<Bottleneck>]
    public let fc: Linear
    public let name: String
    let stem: ConvBNUnit
    static let pool = Pool2DConfig(kernelSize: 3, stride: 2, padding: 1)
    /// Threads for the engine (nil: `Parallel.defaultThreads`).
    public var threads: Int?
    let runner = EngineRunner()

    public init(name: String, blocks: Blocks, blocksPerStage: [Int], classes: Int = 1000, seed: UInt64 = 0) {
        var rng = SeededRNG(seed: seed)
        self.name = name
        conv1 = Conv2d(3, 64, kernelSize: 7, stride: 2, padding: 3, bias: false, rng: &rng)
        bn1 = BatchNorm2d(64)
        stem = ConvBNUnit(conv: conv1, bn: bn1, activation: .relu)
        var cin = 64
        var basic: [ModuleList<BasicBlock>] = [], bottleneck: [ModuleList<Bottleneck>] = []
        for (i, (width, n)) in zip([64, 128, 256, 512], blocksPerStage).enumerated() {
            let strides = (0..<n).map { i > 0 && $0 == 0 ? 2 : 1 }
            switch blocks {
            case .basic:
                basic.append(ModuleList(strides.map { s in
                    defer { cin = width }
                    return BasicBlock(cin, width, stride: s, shortcutKey: "downsample", rng: &rng)
                }))
            case .bottleneck:
                bottleneck.append(ModuleList(strides.map { s in
                    defer { cin = Bottleneck.expansion * width }
                    return Bottleneck(cin, width: width, stride: s, rng: &rng)
                }))
            }
        }
        (basicStages, bottleneckStages) = (basic, bottleneck)
        fc = Linear(cin, classes, rng: &rng)
        super.init()
        for (_, p) in namedParameters() where p.value.rank == 4 {
            p.value = Tensor.kaimingNormal(p.value.shape, mode: .fanOut, rng: &rng)
        }
    }

    /// torchvision's `resnet18`: BasicBlocks, 2 per stage (11.7 M parameters at 1000 classes).
    public static func resnet18(classes: Int = 1000, seed: UInt64 = 0) -> ImageNetResNet {
        ImageNetResNet(name: "resnet18_imagenet", blocks: .basic, blocksPerStage: [2, 2, 2, 2], classes: classes, seed: seed)
    }

    /// torchvision's `resnet50`: Bottlenecks, 3/4/6/3 per stage (25.6 M parameters at 1000 classes).
    public static func resnet50(classes: Int = 1000, seed: UInt64 = 0) -> ImageNetResNet {
        ImageNetResNet(name: "resnet50_imagenet", blocks: .bottleneck, blocksPerStage: [3, 4, 6, 3], classes: classes, seed: seed)
    }

    override public var children: [(String, Module)] {
        let stages: [Module] = basicStages.isEmpty ? bottleneckStages : basicStages
        return [("conv1", conv1), ("bn1", bn1)] + stages.enumerated().map { ("layer\($0.offset + 1)", $0.element) }
            + [("fc", fc)]
    }

    /// The network on the engine: x [N, 3, H, W] → logits [N, classes].
    public func forward(_ x: FeatureMap) -> Variable {
        var h = stem(x).maxPooled(Self.pool)
        for block in basicStages.joined() { h = block(h) }
        for block in bottleneckStages.joined() { h = block(h) }
        return fc(h.globalAveragePooled())
    }

    /// Logits [N, classes] for x [N, 3, H, W]: eval mode in micro-batches of 2 images on the
    /// engine's workers, training mode recorded for `backward`.
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == 3, "\(name) expects [N, 3, H, W], got \(x.shape)")
        return runner.run(x, training: isTraining, threads: threads, microBatch: 2, forward)
    }

    /// Like `callAsFunction`, but validates the input shape of user data first.
    public func predict(_ x: Tensor) throws(InputError) -> Tensor {
        guard x.rank == 4, x.shape[1] == 3, x.shape[0] > 0, x.shape[2] >= 32, x.shape[3] >= 32 else {
            throw .shapeMismatch(context: name, expected: "[N, 3, H ≥ 32, W ≥ 32]", found: x.shape)
        }
        return self(x)
    }

    /// dL/dlogits [N, classes] → dL/dx; accumulates every parameter gradient.
    public func backward(_ gradOutput: Tensor) -> Tensor { runner.backward(gradOutput, inputGradient: true)! }

    /// Parameter gradients only (the stem's input gradient is skipped).
    public func backwardParameters(_ gradOutput: Tensor) { _ = runner.backward(gradOutput, inputGradient: false) }

    /// Multiply-adds of the convolutions and `fc` per image of h × w, from the layer shapes.
    public func macsPerImage(height: Int = 224, width: Int = 224) -> Int {
        var total = conv1.config.macs(h: height, w: width)
        var size = conv1.config.outputSize(h: height, w: width)
        size = Self.pool.outputSize(h: size.h, w: size.w)
        func conv(_ c: Conv2d, _ s: (h: Int, w: Int)) -> (h: Int, w: Int) {
            total += c.config.macs(h: s.h, w: s.w)
            return c.config.outputSize(h: s.h, w: s.w)
        }
        for b in basicStages.joined() {
            let mid = conv(b.conv1, size)
            _ = conv(b.conv2, mid)
            if let p = b.projection { _ = conv(p.conv, size) }
            size = mid
        }
        for b in bottleneckStages.joined() {
            let mid = conv(b.conv2, conv(b.conv1, size))
            _ = conv(b.conv3, mid)
            if let p = b.projection { _ = conv(p.conv, size) }
            size = mid
        }
        return total + fc.weight.value.count
    }
}

extension ImageNetResNet: TrainableNetwork {
    public func outputs(_ x: FeatureMap) -> [Variable] { [forward(x)] }
    public func inferenceMicroBatch(height: Int, width: Int) -> Int { 2 }
}

/// Dense: every sample runs the whole network (`DensePolicy`).
extension ImageNetResNet: AdaptiveModel {
    public typealias Decision = DenseDecision
    public typealias Policy = DensePolicy
    public var inputChannels: Int { 3 }
}
