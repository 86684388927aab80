import DynamicCore
import DynamicNN
import Foundation

// CIFAR ResNets of He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016),
// §4.2: 3×3 stem, no max pool, global average pool, one linear layer. Shortcuts use a 1×1
// projection + BN where the shape changes ("option B"), as in ../shared/peers/netspec.py.

/// conv3×3-BN-ReLU, conv3×3-BN, + shortcut, ReLU. x: [N, Cin, H, W] → [N, Cout, H/s, W/s].
/// Keys: `conv1`, `bn1`, `conv2`, `bn2`, and `shortcut.0` / `shortcut.1` for a projection
/// (`downsample.0` / `.1` in torchvision's ResNets: `shortcutKey`).
public final class BasicBlock: Module, Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d, conv2: Conv2d, bn2: BatchNorm2d
    public let shortcut: Sequential
    let unit1: ConvBNUnit, unit2: ConvBNUnit
    let projection: ConvBNUnit?
    let shortcutKey: String

    public init(_ inChannels: Int, _ outChannels: Int, stride: Int, shortcutKey: String = "shortcut", rng: inout SeededRNG) {
        self.shortcutKey = shortcutKey
        conv1 = Conv2d(inChannels, outChannels, kernelSize: 3, stride: stride, padding: 1, bias: false, rng: &rng)
        bn1 = BatchNorm2d(outChannels)
        conv2 = Conv2d(outChannels, outChannels, kernelSize: 3, padding: 1, bias: false, rng: &rng)
        bn2 = BatchNorm2d(outChannels)
        unit1 = ConvBNUnit(conv: conv1, bn: bn1, activation: .relu)
        unit2 = ConvBNUnit(conv: conv2, bn: bn2, activation: .identity)
        (shortcut, projection) = projectionShortcut(inChannels, outChannels, stride: stride, rng: &rng)
        super.init()
    }

    override public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1), ("conv2", conv2), ("bn2", bn2), (shortcutKey, shortcut)]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        let out = unit2(unit1(x))
        let sc = projection.map { $0(x) } ?? x
        return Ops.add(out, sc, activation: .relu)
    }

    /// The block on the engine: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), the add
    /// and ReLU fused into the second unit (and the projection's batch norm too, in training).
    public func callAsFunction(_ x: FeatureMap) -> FeatureMap {
        let mid = unit1(x)
        let shortcut = projection.map { $0(x) } ?? x
        return unit2(mid, residual: shortcut, activation: .relu)
    }
}

/// The shortcut of a residual block: where the shape changes, a 1×1 convolution with the
/// block's stride + batch norm (keys `0`, `1`; "option B"), else nothing (the identity).
func projectionShortcut(_ inChannels: Int, _ outChannels: Int, stride: Int,
                        rng: inout SeededRNG) -> (keys: Sequential, unit: ConvBNUnit?) {
    guard stride != 1 || inChannels != outChannels else { return (Sequential(), nil) }
    let c = Conv2d(inChannels, outChannels, kernelSize: 1, stride: stride, bias: false, rng: &rng), b = BatchNorm2d(outChannels)
    return (Sequential(c, b), ConvBNUnit(conv: c, bn: b, activation: .identity))
}

/// A CIFAR ResNet: stem conv3×3 (3 → widths[0]) + BN + ReLU, stages `layer1…layerK` of
/// BasicBlocks (the first block of every stage after the first has stride 2), global average
/// pool and `linear`. Input [N, 3, H, W] (32×32 for CIFAR) → logits [N, classes].
/// Keys follow the PyTorch twin in `scripts/make_fixtures.py` (`conv1`, `bn1`,
/// `layer1.0.conv1.weight`, …, `linear.weight`).
///
/// Runs on the engine (`forward(_:)`) in both modes; `usesEngine = false` selects the
/// layer-by-layer NCHW path, which computes the same more slowly (the tests' reference).
public final class CIFARResNet: Module, Layer {
    public let conv1: Conv2d, bn1: BatchNorm2d
    public let stages: [ModuleList<BasicBlock>]
    public let pool = GlobalAvgPool2d()
    public let linear: Linear
    public let name: String
    public let stem: ConvBNUnit
    /// Threads for the engine and the layer path (nil: `Parallel.defaultThreads`).
    public var threads: Int?
    /// False: the layer-by-layer NCHW path instead of the engine.
    public var usesEngine = true
    let runner = EngineRunner()

    public init(name: String, widths: [Int], blocksPerStage: [Int], classes: Int = 10, seed: UInt64 = 0) {
        precondition(widths.count == blocksPerStage.count && !widths.isEmpty)
        var rng = SeededRNG(seed: seed)
        self.name = name
        conv1 = Conv2d(3, widths[0], kernelSize: 3, padding: 1, bias: false, rng: &rng)
        bn1 = BatchNorm2d(widths[0])
        stem = ConvBNUnit(conv: conv1, bn: bn1, activation: .relu)
        var cin = widths[0]
        var stages: [ModuleList<BasicBlock>] = []
        for (i, (w, n)) in zip(widths, blocksPerStage).enumerated() {
            var blocks: [BasicBlock] = []
            for b in 0..<n {
                blocks.append(BasicBlock(cin, w, stride: (i > 0 && b == 0) ? 2 : 1, rng: &rng))
                cin = w
            }
            stages.append(ModuleList(blocks))
        }
        self.stages = stages
        linear = Linear(cin, classes, rng: &rng)
        super.init()
        // He et al. initialise convolutions with kaiming_normal(fan_out); PyTorch's ResNets do too.
        for (_, p) in namedParameters() where p.value.rank == 4 {
            p.value = Tensor.kaimingNormal(p.value.shape, mode: .fanOut, rng: &rng)
        }
    }

    /// Sets the last batch-norm scale γ of every residual branch (`bn2`) to zero, so each block
    /// starts as its shortcut (Goyal et al., "Accurate, Large Minibatch SGD", 2017, §5.1;
    /// torchvision's `zero_init_residual`). Call before training.
    public func zeroInitResiduals() {
        for block in stages.joined() { block.bn2.weight.value = Tensor(zeros: block.bn2.weight.shape) }
    }

    /// ResNet-(6n+2) of He et al. §4.2: widths 16/32/64, n blocks per stage (20, 56, 110, …).
    public static func depth(_ depth: Int, classes: Int = 10, seed: UInt64 = 0) -> CIFARResNet {
        precondition(depth >= 8 && (depth - 2) % 6 == 0, "CIFAR ResNet depth must be 6n+2")
        let n = (depth - 2) / 6
        return CIFARResNet(name: "resnet\(depth)_cifar", widths: [16, 32, 64], blocksPerStage: [n, n, n],
                           classes: classes, seed: seed)
    }

    /// ResNet-18 for CIFAR: widths 64/128/256/512, two blocks each, strides 1/2/2/2.
    public static func resnet18(classes: Int = 10, seed: UInt64 = 0) -> CIFARResNet {
        CIFARResNet(name: "resnet18_cifar", widths: [64, 128, 256, 512], blocksPerStage: [2, 2, 2, 2],
                    classes: classes, seed: seed)
    }

    override public var children: [(String, Module)] {
        [("conv1", conv1), ("bn1", bn1)] + stages.enumerated().map { ("layer\($0.offset + 1)", $0.element) }
            + [("linear", linear)]
    }

    /// Sets the thread count of the engine and of every convolution and linear layer (nil: all cores).
    public func setThreads(_ threads: Int?) {
        self.threads = threads
        func visit(_ m: Module) {
            if let c = m as? Conv2d { c.threads = threads }
            if let l = m as? Linear { l.threads = threads }
            m.children.forEach { visit($0.1) }
        }
        visit(self)
    }

    /// The network on the engine: x [N, 3, H, W] → logits [N, classes].
    public func forward(_ x: FeatureMap) -> Variable {
        var h = stem(x)
        for block in stages.joined() { h = block(h) }
        return linear(h.globalAveragePooled())
    }

    /// Logits [N, classes] for x [N, 3, H, W]. Eval mode runs micro-batches depth-first on the
    /// engine's workers; training mode records the step for `backward` (one call at a time per model).
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == 3, "\(name) expects [N, 3, H, W], got \(x.shape)")
        guard usesEngine else {
            var h = stem(x)
            for s in stages { for b in s { h = b(h) } }
            return linear(pool(h))
        }
        return runner.run(x, training: isTraining, threads: threads, microBatch: microBatch(h: x.shape[2], w: x.shape[3]),
                          forward)
    }

    /// Images per micro-batch of eval-mode inference: enough to fill tiles on small feature
    /// maps, few enough that a micro-batch's activations stay in L2 (depth-first through the network).
    func microBatch(h: Int, w: Int) -> Int {
        let bytesPerImage = conv1.config.outChannels * (h + 2) * (w + 2) * 4
        let fitsL2 = (384 << 10) / bytesPerImage
        // The last stage works on (h / 2^(stages-1))² pixels; 96 of them fill 16 six-pixel tiles.
        let shrink = 1 << (stages.count - 1)
        let lastPixels = Swift.max(1, (h / shrink) * (w / shrink))
        return Swift.max(1, Swift.min(16, Swift.max(fitsL2, (96 + lastPixels - 1) / lastPixels)))
    }

    /// Like `callAsFunction`, but validates the input shape of user data first.
    public func predict(_ x: Tensor) throws(InputError) -> Tensor {
        guard x.rank == 4, x.shape[1] == 3, x.shape[0] > 0, x.shape[2] >= 1, x.shape[3] >= 1 else {
            throw .shapeMismatch(context: name, expected: "[N, 3, H, W]", found: x.shape)
        }
        return self(x)
    }

    /// Multiply-adds of convolutions and the linear layer per image (netspec's FLOPs are 2×),
    /// from the layer shapes: the analytic count the engine's executed cost is tested against.
    public func macsPerImage(height: Int = 32, width: Int = 32) -> Int {
        var total = 0
        var hw = (height, width)
        func conv(_ c: Conv2d, _ size: (Int, Int)) -> (Int, Int) {
            total += c.config.macs(h: size.0, w: size.1)
            return c.config.outputSize(h: size.0, w: size.1)
        }
        hw = conv(conv1, hw)
        for b in stages.joined() {
            let mid = conv(b.conv1, hw)
            _ = conv(b.conv2, mid)
            if let p = b.projection { _ = conv(p.conv, hw) }
            hw = mid
        }
        total += linear.weight.value.count
        return total
    }
}

extension CIFARResNet: TrainableNetwork {
    public func outputs(_ x: FeatureMap) -> [Variable] { [forward(x)] }
    public func inferenceMicroBatch(height: Int, width: Int) -> Int { microBatch(h: height, w: width) }
}

/// Dense: every sample runs the whole network (`DensePolicy`).
extension CIFARResNet: AdaptiveModel {
    public typealias Decision = DenseDecision
    public typealias Policy = DensePolicy
    public var inputChannels: Int { 3 }
}

extension BasicBlock: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        // out = relu(bn2(…) + shortcut(x)); the ReLU mask needs that sum, rebuilt from the
        // caches before the backward passes below consume them. The identity shortcut's x
        // is conv1's cached input.
        guard let x = conv1.savedInput else { missingForward(self) }
        let shortcut = projection?.bn.recomputedOutput() ?? x
        let g = Ops.activationBackward(gradOutput, input: bn2.recomputedOutput() + shortcut, .relu)
        var dx = unit1.backward(unit2.backward(g))
        dx += projection?.backward(g) ?? g
        return dx
    }
}

extension CIFARResNet: Differentiable {
    /// gradOutput: dL/dlogits [N, classes] → dL/dimages [N, 3, H, W]; accumulates every
    /// parameter gradient.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        if runner.hasPendingBackward { return runner.backward(gradOutput, inputGradient: true)! }
        var g = pool.backward(linear.backward(gradOutput))
        for stage in stages.reversed() { for block in stage.reversed() { g = block.backward(g) } }
        return stem.backward(g)
    }

    /// Parameter gradients only: the engine skips the stem's input gradient.
    public func backwardParameters(_ gradOutput: Tensor) {
        guard runner.hasPendingBackward else { _ = backward(gradOutput); return }
        _ = runner.backward(gradOutput, inputGradient: false)
    }
}
