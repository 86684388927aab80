import Foundation

extension Ops {
    /// Fully connected layer, x: [N, in], weight: [out, in], bias: [out] → [N, out] (y = x·Wᵀ + b).
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?, activation: Activation = .identity,
                              threads: Int? = nil) -> Tensor {
        precondition(x.rank == 2 && weight.rank == 2 && x.shape[1] == weight.shape[1],
                     "linear expects x [N, \(weight.shape.count == 2 ? weight.shape[1] : -1)], got \(x.shape)")
        let (n, k, m) = (x.shape[0], x.shape[1], weight.shape[0])
        if let b = bias { precondition(b.shape == [m], "linear bias must be [\(m)], got \(b.shape)") }
        var y = Tensor(zeros: [n, m])
        x.withUnsafeBufferPointer { xb in
            weight.withUnsafeBufferPointer { wb in
                y.withUnsafeMutableBufferPointer { yb in
                    // Y[n×m] = X[n×k] · Wᵀ, Wᵀ expressed through strides.
                    Gemm.sgemm(m: n, n: m, k: k, a: xb.baseAddress!, aRowStride: k, aColStride: 1,
                               b: wb.baseAddress!, bRowStride: 1, bColStride: k,
                               c: yb.baseAddress!, ldc: m, threads: threads ?? 1)
                    let bs = bias?.scalars
                    for r in 0..<n {
                        let row = yb.baseAddress! + r * m
                        if let bs { for j in 0..<m { row[j] += bs[j] } }
                        activation.apply(row, count: m)
                    }
                }
            }
        }
        return y
    }

    /// Softmax over the last axis.
    public static func softmax(_ x: Tensor) -> Tensor { softmaxImpl(x, log: false) }

    /// Log-softmax over the last axis (numerically stable: x − max − log Σ exp(x − max)).
    public static func logSoftmax(_ x: Tensor) -> Tensor { softmaxImpl(x, log: true) }

    static func softmaxImpl(_ x: Tensor, log: Bool) -> Tensor {
        precondition(x.rank >= 1 && x.shape[x.rank - 1] > 0)
        let c = x.shape[x.rank - 1]
        var y = x
        y.withUnsafeMutableBufferPointer { p in
            for r in 0..<(p.count / c) {
                let row = p.baseAddress! + r * c
                var mx = -Float.infinity
                for j in 0..<c { mx = Swift.max(mx, row[j]) }
                var s: Float = 0
                for j in 0..<c { s += Foundation.exp(row[j] - mx) }
                if log {
                    let lse = mx + Foundation.log(s)
                    for j in 0..<c { row[j] -= lse }
                } else {
                    let inv = 1 / s
                    for j in 0..<c { row[j] = Foundation.exp(row[j] - mx) * inv }
                }
            }
        }
        return y
    }

    /// Concatenation along the channel axis: [N, C_i, H, W]… → [N, ΣC_i, H, W] (any rank ≥ 2).
    public static func concatChannels(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty && parts[0].rank >= 2)
        let n = parts[0].shape[0], tail = Array(parts[0].shape.dropFirst(2))
        for t in parts {
            precondition(t.rank == parts[0].rank && t.shape[0] == n && Array(t.shape.dropFirst(2)) == tail,
                         "concat: shapes \(parts.map(\.shape)) differ outside the channel axis")
        }
        let plane = tail.reduce(1, *)
        let total = parts.reduce(0) { $0 + $1.shape[1] }
        return Tensor(shape: [n, total] + tail) { y in
            for img in 0..<n {
                var dst = y.baseAddress! + img * total * plane
                for t in parts {
                    let chunk = t.shape[1] * plane
                    t.withUnsafeBufferPointer { dst.update(from: $0.baseAddress! + img * chunk, count: chunk) }
                    dst += chunk
                }
            }
        }
    }

    /// Channel range of a tensor: [N, C, …] → [N, range.count, …] (a copy).
    public static func sliceChannels(_ x: Tensor, _ range: Range<Int>) -> Tensor {
        precondition(x.rank >= 2 && range.lowerBound >= 0 && range.upperBound <= x.shape[1])
        let n = x.shape[0], c = x.shape[1], plane = x.shape.dropFirst(2).reduce(1, *)
        var shape = x.shape
        shape[1] = range.count
        return x.withUnsafeBufferPointer { xb in
            Tensor(shape: shape) { y in
                for img in 0..<n {
                    (y.baseAddress! + img * range.count * plane)
                        .update(from: xb.baseAddress! + (img * c + range.lowerBound) * plane, count: range.count * plane)
                }
            }
        }
    }

    /// [N, …] → [N, product(…)] (no copy).
    public static func flatten(_ x: Tensor) -> Tensor { x.flattened() }
}

extension Reference {
    public static func linear(_ x: Tensor, weight: Tensor, bias: Tensor?) -> Tensor {
        let (n, k, m) = (x.shape[0], x.shape[1], weight.shape[0])
        var y = Tensor(zeros: [n, m])
        for r in 0..<n { for j in 0..<m {
            var s = Double(bias?[j] ?? 0)
            for p in 0..<k { s += Double(x[r, p]) * Double(weight[j, p]) }
            y[r, j] = Float(s)
        } }
        return y
    }

    public static func softmax(_ x: Tensor) -> Tensor { softmaxImpl(x, log: false) }
    public static func logSoftmax(_ x: Tensor) -> Tensor { softmaxImpl(x, log: true) }

    static func softmaxImpl(_ x: Tensor, log: Bool) -> Tensor {
        let c = x.shape[x.rank - 1]
        let xs = x.scalars
        return Tensor(shape: x.shape) { y in
            for r in 0..<(xs.count / c) {
                let row = xs[(r * c)..<((r + 1) * c)].map(Double.init)
                let mx = row.max()!
                let lse = mx + Foundation.log(row.reduce(0) { $0 + Foundation.exp($1 - mx) })
                for j in 0..<c { y[r * c + j] = Float(log ? row[j] - lse : Foundation.exp(row[j] - lse)) }
            }
        }
    }

    public static func concatChannels(_ parts: [Tensor]) -> Tensor {
        let n = parts[0].shape[0], plane = parts[0].shape.dropFirst(2).reduce(1, *)
        let total = parts.reduce(0) { $0 + $1.shape[1] }
        var out: [Float] = []
        for img in 0..<n {
            for t in parts {
                let chunk = t.shape[1] * plane
                out += t.scalars[(img * chunk)..<((img + 1) * chunk)]
            }
        }
        return Tensor(shape: [n, total] + Array(parts[0].shape.dropFirst(2)), scalars: out)
    }
}
