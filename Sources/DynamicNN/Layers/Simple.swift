import DynamicCore

/// Pointwise activation layer: ReLU, ReLU-1 (clamp to [0, 1]) or leaky ReLU-1. Any shape.
public final class ActivationLayer: Module, Layer {
    public let activation: Activation
    /// Input of the last training-mode forward, kept for `backward`.
    var savedInput: Tensor?
    public init(_ activation: Activation) { self.activation = activation }
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedInput = x }
        return Ops.activation(x, activation)
    }

    /// `max(x, 0)`.
    public static func relu() -> ActivationLayer { ActivationLayer(.relu) }
    /// ReLU-1: `min(max(x, 0), 1)` (LC-Net).
    public static func relu1() -> ActivationLayer { ActivationLayer(.relu1) }
    /// Leaky ReLU-1 with the given slope outside [0, 1] (LC-Net training).
    public static func leakyRelu1(slope: Float) -> ActivationLayer { ActivationLayer(.leakyRelu1(slope: slope)) }
}

/// Max pooling, [N, C, H, W] → [N, C, Ho, Wo].
public final class MaxPool2d: Module, Layer {
    public let config: Pool2DConfig
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0) {
        config = Pool2DConfig(kernelSize: kernelSize, stride: stride, padding: padding)
    }
    /// Input of the last training-mode forward, kept for `backward`.
    var savedInput: Tensor?
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedInput = x }
        return Ops.maxPool2d(x, config)
    }
}

/// Average pooling, [N, C, H, W] → [N, C, Ho, Wo].
public final class AvgPool2d: Module, Layer {
    public let config: Pool2DConfig
    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0, countIncludePad: Bool = true) {
        config = Pool2DConfig(kernelSize: kernelSize, stride: stride, padding: padding, countIncludePad: countIncludePad)
    }
    /// Input shape of the last training-mode forward, kept for `backward`.
    var savedShape: [Int]?
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedShape = x.shape }
        return Ops.avgPool2d(x, config)
    }
}

/// Global average pooling, [N, C, H, W] → [N, C].
public final class GlobalAvgPool2d: Module, Layer {
    override public init() {}
    /// Input shape of the last training-mode forward, kept for `backward`.
    var savedShape: [Int]?
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedShape = x.shape }
        return Ops.globalAvgPool(x)
    }
}

/// [N, …] → [N, product(…)], no copy.
public final class Flatten: Module, Layer {
    override public init() {}
    /// Input shape of the last training-mode forward, kept for `backward`.
    var savedShape: [Int]?
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if isTraining { savedShape = x.shape }
        return x.flattened()
    }
}

/// Passes its input through (an empty shortcut).
public final class Identity: Module, Layer {
    override public init() {}
    public func callAsFunction(_ x: Tensor) -> Tensor { x }
}

/// Layers applied in order; children are keyed "0", "1", … like `nn.Sequential`.
public final class Sequential: Module, Layer {
    public private(set) var layers: [any Layer]
    public init(_ layers: [any Layer]) { self.layers = layers }
    public convenience init(_ layers: any Layer...) { self.init(layers) }

    override public var children: [(String, Module)] { layers.enumerated().map { (String($0.offset), $0.element) } }

    public var isEmpty: Bool { layers.isEmpty }
    public func callAsFunction(_ x: Tensor) -> Tensor { layers.reduce(x) { $1($0) } }
}

/// Modules of one type under the keys "0", "1", … (PyTorch `nn.ModuleList`, or an
/// `nn.Sequential` of one block type): typed, so models walk it without casts.
public final class ModuleList<Element: Module>: Module, RandomAccessCollection {
    public let modules: [Element]
    public init(_ modules: [Element]) { self.modules = modules }

    override public var children: [(String, Module)] { modules.enumerated().map { (String($0.offset), $0.element) } }

    public var startIndex: Int { modules.startIndex }
    public var endIndex: Int { modules.endIndex }
    public subscript(i: Int) -> Element { modules[i] }
}

extension ActivationLayer: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let x = savedInput else { missingForward(self) }
        savedInput = nil
        return Ops.activationBackward(gradOutput, input: x, activation)
    }
}

extension MaxPool2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let x = savedInput else { missingForward(self) }
        savedInput = nil
        return Ops.maxPool2dBackward(gradOutput, input: x, config)
    }
}

extension AvgPool2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let shape = savedShape else { missingForward(self) }
        savedShape = nil
        return Ops.avgPool2dBackward(gradOutput, inputShape: shape, config)
    }
}

extension GlobalAvgPool2d: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let shape = savedShape else { missingForward(self) }
        savedShape = nil
        return Ops.globalAvgPoolBackward(gradOutput, inputShape: shape)
    }
}

extension Flatten: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let shape = savedShape else { missingForward(self) }
        savedShape = nil
        return gradOutput.reshaped(shape)
    }
}

extension Identity: Differentiable {
    public func backward(_ gradOutput: Tensor) -> Tensor { gradOutput }
}

extension Sequential: Differentiable {
    /// Backward through the layers in reverse; every layer must be `Differentiable`.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        layers.reversed().reduce(gradOutput) { g, layer in
            guard let d = layer as? any Differentiable else {
                preconditionFailure("\(type(of: layer)) in Sequential is not Differentiable")
            }
            return d.backward(g)
        }
    }
}
