import DynamicCore
import Foundation

/// Convolution followed by batch norm and an optional activation — the unit CNNs are built
/// from. In eval mode the batch norm is folded into the convolution (one pass, no BN kernel)
/// and the folded weights are packed once for the NCHW8c kernel; both are rebuilt only when
/// a parameter or buffer changed. Keys are those of the two layers it wraps, so it is not a
/// module of its own: owners register `conv` and `bn`.
public final class ConvBNUnit: @unchecked Sendable {
    public let conv: Conv2d
    public let bn: BatchNorm2d
    public let activation: Activation
    private var folded: (weight: Tensor, bias: Tensor, versions: Versions)?
    /// Packed folded weights per route: im2col (an NCHW input with < 8 channels) or direct.
    private var packed: [Bool: (conv: BlockedConv2D, versions: Versions)] = [:]
    /// Engine workers share the unit: packing happens under this lock.
    let lock = NSLock()

    /// Versions of the six tensors the folded weights derive from (no allocation: checked per call).
    private struct Versions: Equatable {
        var w: UInt64, b: UInt64, gamma: UInt64, beta: UInt64, mean: UInt64, variance: UInt64
    }

    public init(conv: Conv2d, bn: BatchNorm2d, activation: Activation) {
        precondition(conv.config.outChannels == bn.channels, "conv and batch norm channel counts differ")
        self.conv = conv
        self.bn = bn
        self.activation = activation
    }

    private var versions: Versions {
        Versions(w: conv.weight.version, b: conv.bias?.version ?? 0, gamma: bn.weight.version, beta: bn.bias.version,
                 mean: bn.runningMean.version, variance: bn.runningVar.version)
    }

    /// Folded (weight, bias) for inference, cached.
    public func foldedWeights() -> (weight: Tensor, bias: Tensor) {
        let v = versions
        if let f = folded, f.versions == v { return (f.weight, f.bias) }
        let r = Ops.foldBatchNorm(weight: conv.weight.value, bias: conv.bias?.value, gamma: bn.weight.value,
                                  beta: bn.bias.value, mean: bn.runningMean.value, variance: bn.runningVar.value,
                                  eps: bn.eps)
        folded = (r.weight, r.bias, v)
        return r
    }

    /// The folded convolution packed for the NCHW8c kernels `options` names (groups = 1), cached.
    /// `im2col`: the route for an NCHW input of < 8 channels (the RGB stem); otherwise such inputs
    /// run as one zero-padded 8-channel block on the direct kernels.
    public func blocked(options: KernelOptions = .fastest, im2col: Bool = false) -> BlockedConv2D {
        lock.lock()
        defer { lock.unlock() }
        let v = versions
        let route = im2col && conv.config.inChannels < 8
        if let p = packed[route], p.versions == v, p.conv.options == options { return p.conv }
        let f = foldedWeights()
        let c = BlockedConv2D(weight: f.weight, bias: f.bias, config: conv.config, im2col: route, options: options)
        packed[route] = (c, v)
        return c
    }

    /// act(bn(conv(x))). x: [N, Cin, H, W] → [N, Cout, Ho, Wo].
    public func callAsFunction(_ x: Tensor) -> Tensor {
        if conv.isTraining || bn.isTraining {
            return Ops.activation(bn(conv(x)), activation)
        }
        let f = foldedWeights()
        return Ops.conv2d(x, weight: f.weight, bias: f.bias, config: conv.config, activation: activation,
                          threads: conv.threads)
    }
}

extension ConvBNUnit {
    /// Backward of act(bn(conv(x))) after a training-mode forward; returns dL/dx.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        let g = activation == .identity ? gradOutput
            : Ops.activationBackward(gradOutput, input: bn.recomputedOutput(), activation)
        return conv.backward(bn.backward(g))
    }
}
