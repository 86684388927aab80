/// Pointwise nonlinearity that kernels can fuse into their epilogue.
public enum Activation: Hashable, Sendable {
    case identity
    case relu
    /// ReLU-1: clamp to [0, 1] (LC-Net's saliency nonlinearity).
    case relu1
    /// Leaky ReLU-1: slope·x below 0, x on [0, 1], 1 + slope·(x − 1) above 1 (LC-Net training).
    case leakyRelu1(slope: Float)

    /// True for the activations that are a clamp to [lo, hi] (fusable into blocked kernels).
    public var isClamp: Bool {
        if case .leakyRelu1 = self { return false }
        return true
    }

    @inlinable
    public func apply(_ x: Float) -> Float {
        switch self {
        case .identity: return x
        case .relu: return Swift.max(x, 0)
        case .relu1: return Swift.min(Swift.max(x, 0), 1)
        case .leakyRelu1(let s): return x < 0 ? s * x : (x > 1 ? 1 + s * (x - 1) : x)
        }
    }

    /// Applies in place to `count` floats, with SIMD8 where it matters.
    public func apply(_ p: UnsafeMutablePointer<Float>, count: Int) {
        var i = 0
        switch self {
        case .identity: return
        case .relu:
            let z = SIMD8<Float>()
            while i + 8 <= count { store8(vmax(load8(p + i), z), p + i); i += 8 }
        case .relu1:
            let z = SIMD8<Float>(), one = SIMD8<Float>(repeating: 1)
            while i + 8 <= count { store8(vmin(vmax(load8(p + i), z), one), p + i); i += 8 }
        case .leakyRelu1(let s):
            let z = SIMD8<Float>(), one = SIMD8<Float>(repeating: 1), sv = SIMD8<Float>(repeating: s)
            while i + 8 <= count {
                let x = load8(p + i)
                // clamp(x) + s·(x − clamp(x)) equals the three-piece definition.
                let c = vmin(vmax(x, z), one)
                store8(c + sv * (x - c), p + i)
                i += 8
            }
        }
        while i < count { p[i] = apply(p[i]); i += 1 }
    }
}

extension Ops {
    /// Elementwise activation, NCHW or any shape.
    public static func activation(_ x: Tensor, _ act: Activation) -> Tensor {
        var y = x
        y.withUnsafeMutableBufferPointer { act.apply($0.baseAddress!, count: $0.count) }
        return y
    }
    public static func relu(_ x: Tensor) -> Tensor { activation(x, .relu) }
    public static func relu1(_ x: Tensor) -> Tensor { activation(x, .relu1) }
    public static func leakyRelu1(_ x: Tensor, slope: Float) -> Tensor { activation(x, .leakyRelu1(slope: slope)) }
}

extension Reference {
    public static func activation(_ x: Tensor, _ act: Activation) -> Tensor {
        x.map { v in
            switch act {
            case .identity: return v
            case .relu: return v > 0 ? v : 0
            case .relu1: return v < 0 ? 0 : (v > 1 ? 1 : v)
            case .leakyRelu1(let s):
                if v < 0 { return s * v }
                if v > 1 { return 1 + s * (v - 1) }
                return v
            }
        }
    }
    public static func relu(_ x: Tensor) -> Tensor { activation(x, .relu) }
    public static func relu1(_ x: Tensor) -> Tensor { activation(x, .relu1) }
    public static func leakyRelu1(_ x: Tensor, slope: Float) -> Tensor { activation(x, .leakyRelu1(slope: slope)) }
}
