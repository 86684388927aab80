/// Batch-norm training kernels on NCHW8c buffers, SIMD8 across the 8 channels of a block.
///
/// Training keeps activations blocked between convolutions: statistics, normalisation (+ residual,
/// + ReLU) and the backward reductions run here, so a training step never converts layouts.
/// Buffers passed to one call share their shape, halo included; halos are zero and stay zero,
/// which lets the reductions sweep whole contiguous block planes.
///
/// Reductions are summed per (image, block) in Float and then over images in order in Double,
/// so results do not depend on the thread count. Reference: the NCHW `BatchNorm2d` statistics and
/// `Ops.batchNormTrainingBackward`, which the tests compare against.
public enum BlockedBatchNorm {
    public static let kernelName = "f32-batchnorm-nchw8c"

    /// Per-channel mean and biased variance over N, H, W of the interior of z [N, C, H, W].
    public static func statistics(_ z: BlockedBuffer, threads: Int? = nil) -> (mean: [Float], variance: [Float]) {
        let s = z.shape
        let sums = planeSums(s, threads: threads) { base, count in
            var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), q0 = SIMD8<Float>(), q1 = SIMD8<Float>()
            let p = UnsafePointer(z.pointer + base)
            var i = 0
            while i + 16 <= count {
                let v0 = load8(p + i), v1 = load8(p + i + 8)
                s0 += v0; s1 += v1; q0 = fmadd(q0, v0, v0); q1 = fmadd(q1, v1, v1)
                i += 16
            }
            if i < count { let v = load8(p + i); s0 += v; q0 = fmadd(q0, v, v) }
            return (s0 + s1, q0 + q1)
        }
        return moments(sum: sums.0, sumOfSquares: sums.1, count: s.n * s.h * s.w)
    }

    /// Mean and biased variance per channel from Σz and Σz² over `count` values.
    public static func moments(sum: [Double], sumOfSquares: [Double], count: Int) -> (mean: [Float], variance: [Float]) {
        let count = Double(count)
        var mean = [Float](repeating: 0, count: sum.count), variance = mean
        for ch in 0..<sum.count {
            let m = sum[ch] / count
            mean[ch] = Float(m)
            variance[ch] = Float(Swift.max(sumOfSquares[ch] / count - m * m, 0))
        }
        return (mean, variance)
    }

    /// y = act(z·scale + shift [+ residual]) over the interior, per channel; with `residualScale`
    /// and `residualShift` the residual is normalised too (a projection shortcut's batch norm):
    /// y = act(z·scale + shift + r·residualScale + residualShift). scale, shift: [C].
    public static func normalize(_ z: BlockedBuffer, scale: [Float], shift: [Float], residual: BlockedBuffer? = nil,
                                 residualScale: [Float]? = nil, residualShift: [Float]? = nil,
                                 activation: Activation, into y: BlockedBuffer, threads: Int? = nil) {
        let s = z.shape
        precondition(y.shape == s && residual.map { $0.shape == s } != false, "normalize: buffers must share \(s)")
        precondition(scale.count == s.c && shift.count == s.c, "normalize: scale/shift need \(s.c) channels")
        precondition((residualScale == nil) == (residualShift == nil), "normalize: residual scale and shift go together")
        let (lo, hi) = BlockedConv2D.clampBounds(activation)
        let sc = padded(scale, s), sh = padded(shift, s)
        let rsc = residualScale.map { padded($0, s) }, rsh = residualShift.map { padded($0, s) }
        let (zp, yp, rp) = (UnsafePointer(z.pointer), y.pointer, residual.map { UnsafePointer($0.pointer) })
        let vlo = SIMD8<Float>(repeating: lo), vhi = SIMD8<Float>(repeating: hi)
        forEachInteriorRow(s, threads: threads) { b, row, count in
            let a = sc[b], t = sh[b]
            let z = zp + row, y = yp + row
            if let rp {
                let r = rp + row
                if let rsc, let rsh {
                    let ra = rsc[b], rt = rsh[b] + t
                    for i in stride(from: 0, to: count, by: 8) {
                        let v = fmadd(fmadd(rt, load8(r + i), ra), load8(z + i), a)
                        store8(vmin(vmax(v, vlo), vhi), y + i)
                    }
                } else {
                    for i in stride(from: 0, to: count, by: 8) {
                        let v = fmadd(t + load8(r + i), load8(z + i), a)
                        store8(vmin(vmax(v, vlo), vhi), y + i)
                    }
                }
            } else {
                for i in stride(from: 0, to: count, by: 8) {
                    store8(vmin(vmax(fmadd(t, load8(z + i), a), vlo), vhi), y + i)
                }
            }
        }
    }

    /// The ReLU that followed a batch norm, seen from the batch norm's backward.
    public enum ReLU {
        /// Its stored output y: the gradient is masked in place, g ← g·[y > 0].
        case output(BlockedBuffer)
        /// Recomputed from the batch norm's input z, [z·scale + shift > 0] (exactly `normalize`'s
        /// arithmetic, so the same mask): nothing more is read. `gradientSums` leaves g unmasked in
        /// memory (a convolution epilogue gathering the sums stores it masked), and `applyBackward`
        /// masks it again either way. scale, shift: [C].
        case recomputed(scale: [Float], shift: [Float])
    }

    /// Backward reductions of a batch norm whose input was z: with `relu`, g is first masked by
    /// the ReLU that followed it (in place for `.output`); then per channel Σg and Σg·z.
    public static func gradientSums(_ g: BlockedBuffer, relu: ReLU?, input z: BlockedBuffer,
                                    threads: Int? = nil) -> (sumG: [Double], sumGZ: [Double]) {
        let s = z.shape
        if case .output(let y) = relu { return gradientSums(g, reluOutput: y, input: z, threads: threads) }
        guard case .recomputed(let scale, let shift) = relu else { return gradientSums(g, reluOutput: nil, input: z, threads: threads) }
        precondition(g.shape == s && scale.count == s.c && shift.count == s.c, "gradientSums: buffers must share \(s)")
        let (gp, zp) = (UnsafePointer(g.pointer), UnsafePointer(z.pointer))
        let (sc, sh) = (padded(scale, s), padded(shift, s))
        return planeSums(s, threads: threads) { base, count in
            var s0 = SIMD8<Float>(), q0 = SIMD8<Float>()
            let blk = (base / s.blockStride) % s.blocks
            let (a, t) = (sc[blk], sh[blk])
            let g = gp + base, z = zp + base
            for i in stride(from: 0, to: count, by: 8) {
                let zv = load8(z + i)
                let v = load8(g + i).replacing(with: 0, where: fmadd(t, zv, a) .<= 0)
                s0 += v; q0 = fmadd(q0, v, zv)
            }
            return (s0, q0)
        }
    }

    /// `gradientSums` for a ReLU given by its output (or none): first g ← g·[reluOutput > 0] in
    /// place, then per channel Σg and Σg·z.
    private static func gradientSums(_ g: BlockedBuffer, reluOutput: BlockedBuffer?, input z: BlockedBuffer,
                                    threads: Int? = nil) -> (sumG: [Double], sumGZ: [Double]) {
        let s = z.shape
        precondition(g.shape == s && reluOutput.map { $0.shape == s } != false, "gradientSums: buffers must share \(s)")
        let (gp, zp, mp) = (g.pointer, UnsafePointer(z.pointer), reluOutput.map { UnsafePointer($0.pointer) })
        let zero = SIMD8<Float>()
        return planeSums(s, threads: threads) { base, count in
            var s0 = SIMD8<Float>(), q0 = SIMD8<Float>()
            let g = gp + base, z = zp + base
            if let mp {
                let m = mp + base
                for i in stride(from: 0, to: count, by: 8) {
                    let v = load8(g + i).replacing(with: zero, where: load8(m + i) .<= zero)
                    store8(v, g + i)
                    s0 += v; q0 = fmadd(q0, v, load8(z + i))
                }
            } else {
                for i in stride(from: 0, to: count, by: 8) {
                    let v = load8(g + i)
                    s0 += v; q0 = fmadd(q0, v, load8(z + i))
                }
            }
            return (s0, q0)
        }
    }

    /// What one batch norm's backward needs, from its forward statistics and the gradient sums.
    public struct Backward: Sendable {
        /// dL/dγ and dL/dβ, [C].
        public var gamma: [Float], beta: [Float]
        /// dz = a·g + b·z + c per channel.
        public var a: [Float], b: [Float], c: [Float]
    }

    /// PyTorch's batch-norm backward, rewritten per channel as dz = a·g + b·z + c:
    /// dβ = Σg, dγ = invStd·(Σg·z − μΣg), dz = γ·invStd·(g − dβ/M − x̂·dγ/M), x̂ = (z − μ)·invStd.
    public static func backward(sumG: [Double], sumGZ: [Double], mean: [Float], invStd: [Float], gamma: [Float],
                                count: Int) -> Backward {
        let c = gamma.count
        var r = Backward(gamma: .init(repeating: 0, count: c), beta: .init(repeating: 0, count: c),
                         a: .init(repeating: 0, count: c), b: .init(repeating: 0, count: c), c: .init(repeating: 0, count: c))
        let m = Double(count)
        for ch in 0..<c {
            let inv = Double(invStd[ch]), mu = Double(mean[ch]), gm = Double(gamma[ch])
            let dBeta = sumG[ch], dGamma = inv * (sumGZ[ch] - mu * sumG[ch])
            let a = gm * inv, b = -gm * inv * inv * dGamma / m
            r.gamma[ch] = Float(dGamma); r.beta[ch] = Float(dBeta)
            r.a[ch] = Float(a); r.b[ch] = Float(b); r.c[ch] = Float(-a * dBeta / m - b * mu)
        }
        return r
    }

    /// dz = a·g + b·z + c over the interior (the halo of dz stays zero). a, b, c: [C]. With
    /// `relu: .recomputed`, g is masked on the fly as `gradientSums` masked it. dz may be g (in place).
    public static func applyBackward(_ k: Backward, gradient g: BlockedBuffer, input z: BlockedBuffer, relu: ReLU? = nil,
                                     into dz: BlockedBuffer, threads: Int? = nil) {
        let s = z.shape
        precondition(g.shape == s && dz.shape == s, "applyBackward: buffers must share \(s)")
        let (ka, kb, kc) = (padded(k.a, s), padded(k.b, s), padded(k.c, s))
        let (gp, zp, dp) = (UnsafePointer(g.pointer), UnsafePointer(z.pointer), dz.pointer)
        if case .recomputed(let scale, let shift) = relu {
            let (sc, sh) = (padded(scale, s), padded(shift, s))
            forEachInteriorRow(s, threads: threads) { blk, row, count in
                let a = ka[blk], b = kb[blk], c = kc[blk], ra = sc[blk], rt = sh[blk]
                let g = gp + row, z = zp + row, d = dp + row
                // Two vectors per step: one step of masking and two FMAs per vector ran at
                // two cycles a vector, slower than the memory it streams from L3.
                var i = 0
                while i + 16 <= count {
                    let z0 = load8(z + i), z1 = load8(z + i + 8)
                    let g0 = load8(g + i).replacing(with: 0, where: fmadd(rt, z0, ra) .<= 0)
                    let g1 = load8(g + i + 8).replacing(with: 0, where: fmadd(rt, z1, ra) .<= 0)
                    store8(fmadd(fmadd(c, z0, b), g0, a), d + i)
                    store8(fmadd(fmadd(c, z1, b), g1, a), d + i + 8)
                    i += 16
                }
                if i < count {
                    let zv = load8(z + i)
                    let gv = load8(g + i).replacing(with: 0, where: fmadd(rt, zv, ra) .<= 0)
                    store8(fmadd(fmadd(c, zv, b), gv, a), d + i)
                }
            }
            return
        }
        forEachInteriorRow(s, threads: threads) { blk, row, count in
            let a = ka[blk], b = kb[blk], c = kc[blk]
            let g = gp + row, z = zp + row, d = dp + row
            for i in stride(from: 0, to: count, by: 8) {
                store8(fmadd(fmadd(c, load8(z + i), b), load8(g + i), a), d + i)
            }
        }
    }

    // MARK: - Helpers

    /// Per-channel Double sums of two per-plane SIMD8 reductions; `plane(offset, count)` reduces
    /// one (image, block) plane, halo included.
    private static func planeSums(_ s: BlockedShape, threads: Int?,
                                  _ plane: (Int, Int) -> (SIMD8<Float>, SIMD8<Float>)) -> ([Double], [Double]) {
        let tasks = s.n * s.blocks
        let partial = UnsafeMutablePointer<SIMD8<Float>>.allocate(capacity: 2 * tasks)
        defer { partial.deallocate() }
        Parallel.forEach(tasks, threads: threads) { t in
            let (n, b) = (t / s.blocks, t % s.blocks)
            let r = plane(n * s.imageStride + b * s.blockStride, s.blockStride)
            partial[2 * t] = r.0
            partial[2 * t + 1] = r.1
        }
        var first = [Double](repeating: 0, count: s.c), second = first
        for n in 0..<s.n {
            for b in 0..<s.blocks {
                let (u, v) = (partial[2 * (n * s.blocks + b)], partial[2 * (n * s.blocks + b) + 1])
                for k in 0..<Swift.min(8, s.c - 8 * b) {
                    first[8 * b + k] += Double(u[k]); second[8 * b + k] += Double(v[k])
                }
            }
        }
        return (first, second)
    }

    /// Calls body(block, rowOffset, floats) for every interior row of every (image, block).
    private static func forEachInteriorRow(_ s: BlockedShape, threads: Int?, _ body: (Int, Int, Int) -> Void) {
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let (n, b) = (t / s.blocks, t % s.blocks)
            let base = n * s.imageStride + b * s.blockStride
            for y in 0..<s.h { body(b, base + s.pixelOffset(y, 0), s.w * 8) }
        }
    }

    /// Per-channel values as one SIMD8 per block, padded with zeros.
    private static func padded(_ v: [Float], _ s: BlockedShape) -> [SIMD8<Float>] {
        (0..<s.blocks).map { b in
            var r = SIMD8<Float>()
            for k in 0..<Swift.min(8, v.count - 8 * b) { r[k] = v[8 * b + k] }
            return r
        }
    }
}

extension BlockedOps {
    /// Backward of `globalAvgPool`: every interior pixel of dx gets g[n, c] / (H·W). g: [N, C].
    public static func globalAvgPoolBackward(_ g: Tensor, into dx: BlockedBuffer) {
        let s = dx.shape
        precondition(g.shape == [s.n, s.c], "global pool backward expects [\(s.n), \(s.c)], got \(g.shape)")
        let inv = 1 / Float(s.h * s.w)
        g.withUnsafeBufferPointer { gb in
            for n in 0..<s.n {
                for b in 0..<s.blocks {
                    var v = SIMD8<Float>()
                    for k in 0..<Swift.min(8, s.c - 8 * b) { v[k] = gb[n * s.c + 8 * b + k] * inv }
                    let base = dx.pointer + n * s.imageStride + b * s.blockStride
                    for y in 0..<s.h { for x in 0..<s.w { store8(v, base + s.pixelOffset(y, x)) } }
                }
            }
        }
    }
}
