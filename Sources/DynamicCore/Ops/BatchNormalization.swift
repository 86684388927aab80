import Foundation

extension Ops {
    /// Inference batch norm with running statistics, x: [N, C, H, W] (or [N, C]);
    /// y = γ·(x − μ)/√(σ² + ε) + β, computed as one scale and shift per channel.
    public static func batchNorm(_ x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor,
                                 eps: Float = 1e-5, activation: Activation = .identity) -> Tensor {
        let (scale, shift) = batchNormScaleShift(gamma: gamma, beta: beta, mean: mean, variance: variance, eps: eps)
        return channelAffine(x, scale: scale, shift: shift, activation: activation)
    }

    /// Per-channel scale and shift equivalent to inference batch norm.
    public static func batchNormScaleShift(gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor,
                                           eps: Float) -> (scale: [Float], shift: [Float]) {
        let c = gamma.count
        precondition(beta.count == c && mean.count == c && variance.count == c, "batch norm parameter sizes differ")
        let g = gamma.scalars, b = beta.scalars, m = mean.scalars, v = variance.scalars
        var scale = [Float](repeating: 0, count: c), shift = scale
        for i in 0..<c {
            scale[i] = g[i] / (v[i] + eps).squareRoot()
            shift[i] = b[i] - m[i] * scale[i]
        }
        return (scale, shift)
    }

    /// y[n, c, …] = act(scale[c]·x[n, c, …] + shift[c]) for x of rank ≥ 2.
    public static func channelAffine(_ x: Tensor, scale: [Float], shift: [Float],
                                     activation: Activation = .identity) -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == scale.count && shift.count == scale.count,
                     "channel affine expects [N, \(scale.count), …], got \(x.shape)")
        let n = x.shape[0], c = x.shape[1], plane = x.count / Swift.max(n * c, 1)
        var y = x
        y.withUnsafeMutableBufferPointer { yb in
            for img in 0..<n {
                for ch in 0..<c {
                    let p = yb.baseAddress! + (img * c + ch) * plane
                    let s = scale[ch], t = shift[ch]
                    let sv = SIMD8<Float>(repeating: s), tv = SIMD8<Float>(repeating: t)
                    var i = 0
                    while i + 8 <= plane { store8(fmadd(tv, load8(p + i), sv), p + i); i += 8 }
                    while i < plane { p[i] = s * p[i] + t; i += 1 }
                    activation.apply(p, count: plane)
                }
            }
        }
        return y
    }

    /// Folds inference batch norm into the preceding convolution:
    /// bn(conv(x; W, b)) = conv(x; W·s, (b − μ)·s + β) with s = γ/√(σ² + ε).
    /// weight: [Cout, …]; bias: [Cout] or nil → (weight, bias) of the same shapes.
    public static func foldBatchNorm(weight: Tensor, bias: Tensor?, gamma: Tensor, beta: Tensor,
                                     mean: Tensor, variance: Tensor, eps: Float = 1e-5) -> (weight: Tensor, bias: Tensor) {
        let cout = weight.shape[0]
        precondition(gamma.count == cout, "batch norm has \(gamma.count) channels, conv has \(cout)")
        let per = weight.count / cout
        let g = gamma.scalars, be = beta.scalars, m = mean.scalars, v = variance.scalars
        let b0 = bias?.scalars ?? [Float](repeating: 0, count: cout)
        var w = weight
        var newBias = [Float](repeating: 0, count: cout)
        w.withUnsafeMutableBufferPointer { wp in
            for o in 0..<cout {
                // Double keeps the folded weights within an ulp of the unfused result.
                let s = Double(g[o]) / (Double(v[o]) + Double(eps)).squareRoot()
                for i in 0..<per { wp[o * per + i] = Float(Double(wp[o * per + i]) * s) }
                newBias[o] = Float((Double(b0[o]) - Double(m[o])) * s + Double(be[o]))
            }
        }
        return (w, Tensor(shape: [cout], scalars: newBias))
    }
}

extension Reference {
    public static func batchNorm(_ x: Tensor, gamma: Tensor, beta: Tensor, mean: Tensor, variance: Tensor,
                                 eps: Float = 1e-5) -> Tensor {
        let n = x.shape[0], c = x.shape[1], plane = x.count / (n * c)
        let xs = x.scalars, g = gamma.scalars, b = beta.scalars, m = mean.scalars, v = variance.scalars
        return Tensor(shape: x.shape) { y in
            for i in 0..<x.count {
                let ch = (i / plane) % c
                y[i] = Float(Double(g[ch]) * (Double(xs[i]) - Double(m[ch])) / (Double(v[ch]) + Double(eps)).squareRoot()
                             + Double(b[ch]))
            }
        }
    }
}
