import Foundation

/// Seeded, reproducible random number generator (xoshiro256**, seeded through SplitMix64).
/// The same seed gives the same stream on every platform.
public struct SeededRNG: RandomNumberGenerator, Sendable {
    var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    public mutating func next() -> UInt64 {
        let result = ((s.1 &* 5) << 7 | (s.1 &* 5) >> 57) &* 9
        let t = s.1 << 17
        s.2 ^= s.0; s.3 ^= s.1; s.1 ^= s.2; s.0 ^= s.3
        s.2 ^= t
        s.3 = (s.3 << 45) | (s.3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 24 bits of precision.
    public mutating func nextUniform() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Standard normal (Box–Muller).
    public mutating func nextNormal() -> Float {
        let u1 = Swift.max(Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0), 1e-300)
        let u2 = Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
        return Float((-2 * Foundation.log(u1)).squareRoot() * Foundation.cos(2 * Double.pi * u2))
    }
}

extension Tensor {
    /// Uniform in [low, high).
    public static func uniform(_ shape: [Int], low: Float = 0, high: Float = 1, rng: inout SeededRNG) -> Tensor {
        Tensor(shape: shape) { p in for i in 0..<p.count { p[i] = low + (high - low) * rng.nextUniform() } }
    }

    /// Normal with the given mean and standard deviation.
    public static func normal(_ shape: [Int], mean: Float = 0, std: Float = 1, rng: inout SeededRNG) -> Tensor {
        Tensor(shape: shape) { p in for i in 0..<p.count { p[i] = mean + std * rng.nextNormal() } }
    }

    /// Fan-in and fan-out of a weight the way PyTorch computes them: for `[out, in, k...]`,
    /// fan_in = in·∏k, fan_out = out·∏k; for `[out, in]` (linear) likewise without k.
    public static func fans(of shape: [Int]) -> (fanIn: Int, fanOut: Int) {
        precondition(shape.count >= 2, "fan needs a weight of rank ≥ 2, got \(shape)")
        let receptive = shape.dropFirst(2).reduce(1, *)
        return (shape[1] * receptive, shape[0] * receptive)
    }

    public enum FanMode: Sendable { case fanIn, fanOut }

    /// `torch.nn.init.kaiming_normal_(w, mode:, nonlinearity='relu')`: N(0, 2/fan).
    public static func kaimingNormal(_ shape: [Int], mode: FanMode = .fanIn, rng: inout SeededRNG) -> Tensor {
        let f = fans(of: shape)
        let fan = Float(mode == .fanIn ? f.fanIn : f.fanOut)
        return normal(shape, std: (2 / fan).squareRoot(), rng: &rng)
    }

    /// `torch.nn.init.kaiming_uniform_(w, a:, mode:)` with leaky-ReLU gain √(2/(1+a²)):
    /// U(-b, b), b = gain·√(3/fan). With a = √5 this is PyTorch's default Conv/Linear init.
    public static func kaimingUniform(_ shape: [Int], a: Float = 0, mode: FanMode = .fanIn,
                                      rng: inout SeededRNG) -> Tensor {
        let f = fans(of: shape)
        let fan = Float(mode == .fanIn ? f.fanIn : f.fanOut)
        let gain = (2 / (1 + a * a)).squareRoot()
        let bound = gain * (3 / fan).squareRoot()
        return uniform(shape, low: -bound, high: bound, rng: &rng)
    }
}

extension Tensor {
    /// 64-bit FNV-1a of a string: a stable seed for a named parameter.
    public static func fnv1a64(_ s: String) -> UInt64 {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return h
    }

    /// Counter-based (stateless) uniform values in [low, high): element i is a SplitMix64 hash of
    /// `seed + (i + 1)·γ`. Any element can be produced independently and the stream is trivial to
    /// reproduce in numpy, which is how large-model fixtures avoid storing their weights.
    public static func hashUniform(_ shape: [Int], seed: UInt64, low: Float, high: Float) -> Tensor {
        Tensor(shape: shape) { p in
            for i in 0..<p.count {
                var z = seed &+ UInt64(i + 1) &* 0x9E37_79B9_7F4A_7C15
                z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
                z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
                z ^= z >> 31
                let u = Float(z >> 40) * Float(1.0 / 16_777_216.0)
                p[i] = low + (high - low) * u
            }
        }
    }
}
