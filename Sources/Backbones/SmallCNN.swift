import DynamicCore
import DynamicNN

/// A small VGG-style CNN for small images (Fashion-MNIST, MNIST, CIFAR), built from plain
/// layers in one `Sequential`, so training uses the generic layer backward passes.
///
/// `stages` lists the output widths of the conv3×3-BN-ReLU units of each stage; a 2×2 max pool
/// follows every stage but the last (an empty last stage therefore ends the features with a
/// pool). The defaults are the `cnn-small` of `dynbench train` for Fashion-MNIST (≈ 92 % test
/// accuracy after 5 epochs; 4.2 M multiply-adds and 0.42 M parameters), for x: [N, 1, 28, 28]:
///
///     conv3×3(1→32)-BN-ReLU,  maxpool 2     [N, 32, 28, 28] → [N, 32, 14, 14]
///     conv3×3(32→64)-BN-ReLU, maxpool 2     [N, 64, 14, 14] → [N, 64,  7,  7]
///     flatten                               [N, 3136]
///     linear(3136→128)-ReLU                 [N, 128]
///     linear(128→classes)                   [N, classes]
///
/// `head: .globalAverage` ends with global average pooling and one linear layer instead and
/// accepts any input size ≥ 2^(stages − 1); the flatten head needs `inputSize` to size its
/// first linear layer. Keys are those of a PyTorch `nn.Sequential` of the same layers
/// (`0.weight`, `1.running_mean`, …); convolutions have no bias (BN follows them) and
/// kaiming-normal (fan-out) initialization; linear layers keep PyTorch's default init.
///
/// It runs on the engine (`forward(_:)`); `usesEngine = false` selects the layer path of the
/// `Sequential` (the tests' reference).
public final class SmallCNN: Module, Layer, Differentiable {
    public let net: Sequential
    public let inChannels: Int, classes: Int
    public let head: Head
    /// conv-BN-ReLU units per stage, over the layers of `net`.
    let stageUnits: [[ConvBNUnit]]
    /// The linear layers of the head, in order.
    let linears: [Linear]
    static let pool = Pool2DConfig(kernelSize: 2)
    /// Threads for the engine and the layer path (nil: `Parallel.defaultThreads`).
    public var threads: Int?
    /// False: the layer path of `net` instead of the engine.
    public var usesEngine = true
    let runner = EngineRunner()

    /// The classifier after the last stage.
    public enum Head: Sendable, Equatable {
        /// Global average pool, then linear(width → classes).
        case globalAverage
        /// Flatten the last feature map (its size follows from `inputSize`), then
        /// linear(→ hidden)-ReLU when `hidden` is set, then linear(→ classes).
        case flatten(hidden: Int?)
    }

    public init(inChannels: Int = 1, classes: Int = 10, stages: [[Int]] = [[32], [64], []],
                head: Head = .flatten(hidden: 128), inputSize: (height: Int, width: Int) = (28, 28), seed: UInt64 = 0) {
        precondition(inChannels > 0 && classes > 0 && !stages.isEmpty && stages.joined().allSatisfy { $0 > 0 })
        var rng = SeededRNG(seed: seed)
        var layers: [any Layer] = []
        var cin = inChannels
        var size = inputSize
        var stageUnits: [[ConvBNUnit]] = []
        for (i, stage) in stages.enumerated() {
            var units: [ConvBNUnit] = []
            for w in stage {
                let conv = Conv2d(cin, w, kernelSize: 3, padding: 1, bias: false, rng: &rng)
                conv.weight.value = Tensor.kaimingNormal(conv.weight.shape, mode: .fanOut, rng: &rng)
                let bn = BatchNorm2d(w)
                layers += [conv, bn, ActivationLayer.relu()]
                units.append(ConvBNUnit(conv: conv, bn: bn, activation: .relu))
                cin = w
            }
            stageUnits.append(units)
            if i < stages.count - 1 {
                let pool = MaxPool2d(kernelSize: 2, stride: Self.pool.strideH)
                let o = pool.config.outputSize(h: size.height, w: size.width)
                size = (o.h, o.w)
                precondition(size.height > 0 && size.width > 0, "input \(inputSize) too small for \(stages.count) stages")
                layers.append(pool)
            }
        }
        switch head {
        case .globalAverage:
            layers += [GlobalAvgPool2d(), Linear(cin, classes, rng: &rng)]
        case .flatten(let hidden):
            var features = cin * size.height * size.width
            layers.append(Flatten())
            if let hidden {
                precondition(hidden > 0)
                layers += [Linear(features, hidden, rng: &rng), ActivationLayer.relu()]
                features = hidden
            }
            layers.append(Linear(features, classes, rng: &rng))
        }
        net = Sequential(layers)
        self.inChannels = inChannels
        self.classes = classes
        self.head = head
        self.stageUnits = stageUnits
        linears = layers.compactMap { $0 as? Linear }
        super.init()
    }

    override public var children: [(String, Module)] { net.children }

    /// The network on the engine: x [N, inChannels, H, W] → logits [N, classes].
    public func forward(_ x: FeatureMap) -> Variable {
        var h = x
        for (i, units) in stageUnits.enumerated() {
            for unit in units { h = unit(h) }
            if i < stageUnits.count - 1 { h = h.maxPooled(Self.pool) }
        }
        switch head {
        case .globalAverage:
            return linears[0](h.globalAveragePooled())
        case .flatten(let hidden):
            let features = h.flattened()
            guard hidden != nil else { return linears[0](features) }
            return linears[1](linears[0](features).activated(.relu))
        }
    }

    /// x: [N, inChannels, H, W] → logits [N, classes].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inChannels, "SmallCNN expects [N, \(inChannels), H, W], got \(x.shape)")
        guard usesEngine else { return net(x) }
        return runner.run(x, training: isTraining, threads: threads, microBatch: 16, forward)
    }

    /// dL/dlogits [N, classes] → dL/dx; accumulates every parameter gradient.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        runner.hasPendingBackward ? runner.backward(gradOutput, inputGradient: true)! : net.backward(gradOutput)
    }

    /// Parameter gradients only: the engine skips the first convolution's input gradient.
    public func backwardParameters(_ gradOutput: Tensor) {
        guard runner.hasPendingBackward else { _ = net.backward(gradOutput); return }
        _ = runner.backward(gradOutput, inputGradient: false)
    }

    /// Sets the thread count of the engine and of every convolution and linear layer (nil: `Parallel.defaultThreads`).
    public func setThreads(_ threads: Int?) {
        self.threads = threads
        for layer in net.layers {
            if let c = layer as? Conv2d { c.threads = threads }
            if let l = layer as? Linear { l.threads = threads }
        }
    }

    /// Multiply-adds of the convolutions and the linear layer per image of size h×w.
    public func macsPerImage(height: Int = 28, width: Int = 28) -> Int {
        var total = 0, hw = (height, width)
        for layer in net.layers {
            if let c = layer as? Conv2d {
                total += c.config.macs(h: hw.0, w: hw.1)
                hw = c.config.outputSize(h: hw.0, w: hw.1)
            } else if let p = layer as? MaxPool2d {
                hw = p.config.outputSize(h: hw.0, w: hw.1)
            } else if let l = layer as? Linear {
                total += l.weight.value.count
            }
        }
        return total
    }
}

extension SmallCNN: TrainableNetwork {
    public func outputs(_ x: FeatureMap) -> [Variable] { [forward(x)] }
}

/// Dense: every sample runs the whole network (`DensePolicy`).
extension SmallCNN: AdaptiveModel {
    public typealias Decision = DenseDecision
    public typealias Policy = DensePolicy
    public var inputChannels: Int { inChannels }
}
