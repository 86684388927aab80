/// Elementwise kernels on NCHW8c buffers, SIMD8 across a block's channels; halos stay zero.
extension BlockedOps {
    /// y = act(a + b) over the whole buffers (y may be a or b). Shapes must match.
    public static func add(_ a: BlockedBuffer, _ b: BlockedBuffer, activation: Activation = .identity, into y: BlockedBuffer,
                           threads: Int? = nil) {
        let s = a.shape
        precondition(b.shape == s && y.shape == s, "add: \(a.shape), \(b.shape) into \(y.shape)")
        let (lo, hi) = BlockedConv2D.clampBounds(activation)
        let vlo = SIMD8<Float>(repeating: lo), vhi = SIMD8<Float>(repeating: hi)
        let (ap, bp, yp) = (UnsafePointer(a.pointer), UnsafePointer(b.pointer), y.pointer)
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let base = t * s.blockStride
            for i in stride(from: base, to: base + s.blockStride, by: 8) {
                // The halo is 0 + 0, and clamp bounds contain 0.
                store8(vmin(vmax(load8(ap + i) + load8(bp + i), vlo), vhi), yp + i)
            }
        }
    }

    /// y[n, c] = x[n, c]·scale[n, c] over the interior, scale: [N·C] (per sample and channel)
    /// or [N] (per sample). y may be x.
    public static func scale(_ x: BlockedBuffer, by scale: [Float], into y: BlockedBuffer, threads: Int? = nil) {
        let s = x.shape
        precondition(y.shape == s && (scale.count == s.n || scale.count == s.n * s.c), "scale: \(scale.count) factors for \(s)")
        let perChannel = scale.count == s.n * s.c
        let (xp, yp) = (UnsafePointer(x.pointer), y.pointer)
        scale.withUnsafeBufferPointer { sp in
            let sp = sp.baseAddress!
            Parallel.forEach(s.n * s.blocks, threads: threads) { t in
                let (n, b) = (t / s.blocks, t % s.blocks)
                var f = SIMD8<Float>()
                for k in 0..<Swift.min(8, s.c - 8 * b) { f[k] = perChannel ? sp[n * s.c + 8 * b + k] : sp[n] }
                let base = t * s.blockStride
                for row in 0..<s.h {
                    let o = base + s.pixelOffset(row, 0)
                    for i in stride(from: o, to: o + s.w * 8, by: 8) { store8(load8(xp + i) * f, yp + i) }
                }
            }
        }
    }

    /// Σ over pixels of g·x per (sample, channel): the gradient of a per-(sample, channel)
    /// scale, [N·C] (Float sums per plane, Double over rows).
    public static func scaleGradient(_ g: BlockedBuffer, input x: BlockedBuffer, threads: Int? = nil) -> [Float] {
        let s = x.shape
        precondition(g.shape == s, "scaleGradient: \(g.shape) vs \(s)")
        var out = [Float](repeating: 0, count: s.n * s.c)
        let (gp, xp) = (UnsafePointer(g.pointer), UnsafePointer(x.pointer))
        out.withUnsafeMutableBufferPointer { op in
            let op = op.baseAddress!
            Parallel.forEach(s.n * s.blocks, threads: threads) { t in
                let (n, b) = (t / s.blocks, t % s.blocks)
                var total = SIMD8<Double>()
                let base = t * s.blockStride
                for row in 0..<s.h {
                    var acc = SIMD8<Float>()
                    let o = base + s.pixelOffset(row, 0)
                    for i in stride(from: o, to: o + s.w * 8, by: 8) { acc = fmadd(acc, load8(gp + i), load8(xp + i)) }
                    for k in 0..<8 { total[k] += Double(acc[k]) }
                }
                for k in 0..<Swift.min(8, s.c - 8 * b) { op[n * s.c + 8 * b + k] = Float(total[k]) }
            }
        }
        return out
    }
}

extension BlockedOps {
    /// g ← g·[lo < y < hi] over the interior (in place): the gradient through a clamp activation
    /// (ReLU: (0, ∞), ReLU-1: (0, 1)) given its output y. Identity leaves g as it is.
    public static func clampBackward(_ g: BlockedBuffer, output y: BlockedBuffer, activation: Activation, threads: Int? = nil) {
        guard activation != .identity else { return }
        precondition(g.shape == y.shape, "clampBackward: \(g.shape) vs \(y.shape)")
        let (lo, hi) = BlockedConv2D.clampBounds(activation)
        let vlo = SIMD8<Float>(repeating: lo), vhi = SIMD8<Float>(repeating: hi), zero = SIMD8<Float>()
        let s = g.shape
        let (gp, yp) = (g.pointer, UnsafePointer(y.pointer))
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let base = t * s.blockStride
            for i in stride(from: base, to: base + s.blockStride, by: 8) {
                let v = load8(yp + i)
                store8(load8(gp + i).replacing(with: zero, where: (v .<= vlo) .| (v .>= vhi)), gp + i)
            }
        }
    }

    /// Σ over the interior of g per channel, [C] (Float per plane, Double over planes).
    public static func channelSums(_ g: BlockedBuffer, threads: Int? = nil) -> [Float] {
        let s = g.shape
        let partial = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: s.n * s.blocks)
        defer { partial.deallocate() }
        let gp = UnsafePointer(g.pointer)
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            var acc = SIMD8<Float>()
            let base = t * s.blockStride
            for i in stride(from: base, to: base + s.blockStride, by: 8) { acc += load8(gp + i) }   // halo is zero
            partial[t] = acc
        }
        var out = [Double](repeating: 0, count: s.c)
        for t in 0..<(s.n * s.blocks) {
            let b = t % s.blocks
            for k in 0..<Swift.min(8, s.c - 8 * b) { out[8 * b + k] += Double(partial[t][k]) }
        }
        return out.map(Float.init)
    }
}
