import DynamicCore

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
public final class SmallCNN: Module, Layer, Differentiable {
    public let net: Sequential
    public let inChannels: Int, classes: Int

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
        for (i, stage) in stages.enumerated() {
            for w in stage {
                let conv = Conv2d(cin, w, kernelSize: 3, padding: 1, bias: false, rng: &rng)
                conv.weight.value = Tensor.kaimingNormal(conv.weight.shape, mode: .fanOut, rng: &rng)
                layers += [conv, BatchNorm2d(w), ActivationLayer.relu()]
                cin = w
            }
            if i < stages.count - 1 {
                let pool = MaxPool2d(kernelSize: 2)
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
        super.init()
    }

    override public var children: [(String, Module)] { net.children }

    /// x: [N, inChannels, H, W] → logits [N, classes].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == inChannels, "SmallCNN expects [N, \(inChannels), H, W], got \(x.shape)")
        return net(x)
    }

    /// dL/dlogits [N, classes] → dL/dx; accumulates every parameter gradient.
    public func backward(_ gradOutput: Tensor) -> Tensor { net.backward(gradOutput) }

    /// Sets the thread count of every convolution and linear layer (nil: `Parallel.defaultThreads`).
    public func setThreads(_ threads: Int?) {
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
