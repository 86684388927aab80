/// Single-precision matrix multiply: C[M×N] (+)= A[M×K] · B[K×N].
///
/// Operands are described by strides, so transposed views cost nothing to express:
/// element (i, j) of A is `a[i * aRowStride + j * aColStride]`, likewise for B. C is
/// row-major with leading dimension `ldc`. The fast path packs A into 6-row panels and B into
/// 16-column panels and runs a 6×16 SIMD8 microkernel (12 accumulators, DESIGN §2).
public enum Gemm {
    static let mr = 6, nr = 16
    static let kc = 256, mc = 72, nc = 512

    /// Kernel name, XNNPACK style.
    public static let kernelName = "f32-gemm-6x16"

    public static func sgemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, aRowStride: Int, aColStride: Int,
        b: UnsafePointer<Float>, bRowStride: Int, bColStride: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        accumulate: Bool = false, threads: Int = 1
    ) {
        if m == 0 || n == 0 { return }
        if k == 0 {
            if !accumulate { for i in 0..<m { (c + i * ldc).update(repeating: 0, count: n) } }
            return
        }
        let parts = Parallel.ranges(n, parts: threads, align: nr)
        if parts.count <= 1 {
            serial(m, n, k, a, aRowStride, aColStride, b, bRowStride, bColStride, c, ldc, accumulate)
            return
        }
        let args = UncheckedSendable((a, b, c))
        Parallel.forEach(parts.count, threads: parts.count) { t in
            let r = parts[t]
            let (a, b, c) = args.value
            serial(m, r.count, k, a, aRowStride, aColStride,
                   b + r.lowerBound * bColStride, bRowStride, bColStride,
                   c + r.lowerBound, ldc, accumulate)
        }
    }

    static func serial(
        _ m: Int, _ n: Int, _ k: Int,
        _ a: UnsafePointer<Float>, _ ars: Int, _ acs: Int,
        _ b: UnsafePointer<Float>, _ brs: Int, _ bcs: Int,
        _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool
    ) {
        let packA = UnsafeMutablePointer<Float>.allocate(capacity: mc * kc)
        let packB = UnsafeMutablePointer<Float>.allocate(capacity: kc * (nc + nr))
        defer { packA.deallocate(); packB.deallocate() }
        var tile = [Float](repeating: 0, count: mr * nr)
        tile.withUnsafeMutableBufferPointer { tileBuf in
            let tileP = tileBuf.baseAddress!
            var jc = 0
            while jc < n {
                let nb = Swift.min(nc, n - jc)
                var pc = 0
                while pc < k {
                    let kb = Swift.min(kc, k - pc)
                    packPanelsB(kb, nb, b + pc * brs + jc * bcs, brs, bcs, packB)
                    let acc = accumulate || pc > 0
                    var ic = 0
                    while ic < m {
                        let mb = Swift.min(mc, m - ic)
                        packPanelsA(mb, kb, a + ic * ars + pc * acs, ars, acs, packA)
                        var jr = 0
                        while jr < nb {
                            let nrr = Swift.min(nr, nb - jr)
                            var ir = 0
                            while ir < mb {
                                let mrr = Swift.min(mr, mb - ir)
                                let cp = c + (ic + ir) * ldc + jc + jr
                                let pa = UnsafePointer(packA + ir * kb)
                                let pb = UnsafePointer(packB + jr * kb)
                                if mrr == mr && nrr == nr {
                                    micro6x16(kb, pa, pb, cp, ldc, acc)
                                } else {
                                    micro6x16(kb, pa, pb, tileP, nr, false)
                                    for i in 0..<mrr {
                                        for j in 0..<nrr {
                                            let v = tileP[i * nr + j]
                                            cp[i * ldc + j] = acc ? cp[i * ldc + j] + v : v
                                        }
                                    }
                                }
                                ir += mr
                            }
                            jr += nr
                        }
                        ic += mb
                    }
                    pc += kb
                }
                jc += nb
            }
        }
    }

    /// A block [mb × kb] → panels of `mr` rows, each stored k-major (mr floats per k), zero-padded.
    static func packPanelsA(_ mb: Int, _ kb: Int, _ a: UnsafePointer<Float>, _ rs: Int, _ cs: Int,
                            _ out: UnsafeMutablePointer<Float>) {
        var o = out
        var i0 = 0
        while i0 < mb {
            let rows = Swift.min(mr, mb - i0)
            for kk in 0..<kb {
                for i in 0..<mr { o[i] = i < rows ? a[(i0 + i) * rs + kk * cs] : 0 }
                o += mr
            }
            i0 += mr
        }
    }

    /// B block [kb × nb] → panels of `nr` columns, each stored k-major (nr floats per k), zero-padded.
    static func packPanelsB(_ kb: Int, _ nb: Int, _ b: UnsafePointer<Float>, _ rs: Int, _ cs: Int,
                            _ out: UnsafeMutablePointer<Float>) {
        var o = out
        var j0 = 0
        while j0 < nb {
            let cols = Swift.min(nr, nb - j0)
            for kk in 0..<kb {
                let row = b + kk * rs + j0 * cs
                if cols == nr && cs == 1 {
                    o.update(from: row, count: nr)
                } else {
                    for j in 0..<nr { o[j] = j < cols ? row[j * cs] : 0 }
                }
                o += nr
            }
            j0 += nr
        }
    }

    /// The 6×16 microkernel: C[6×16] (+)= Apanel[k×6]ᵀ · Bpanel[k×16].
    @inline(never)
    static func micro6x16(_ k: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>,
                          _ c: UnsafeMutablePointer<Float>, _ ldc: Int, _ accumulate: Bool) {
        var c00 = SIMD8<Float>(), c01 = SIMD8<Float>()
        var c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
        var c20 = SIMD8<Float>(), c21 = SIMD8<Float>()
        var c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
        var c40 = SIMD8<Float>(), c41 = SIMD8<Float>()
        var c50 = SIMD8<Float>(), c51 = SIMD8<Float>()
        var pa = a, pb = b
        for _ in 0..<k {
            let b0 = load8(pb), b1 = load8(pb + 8)
            var av = SIMD8<Float>(repeating: pa[0])
            c00 = fmadd(c00, av, b0); c01 = fmadd(c01, av, b1)
            av = SIMD8<Float>(repeating: pa[1])
            c10 = fmadd(c10, av, b0); c11 = fmadd(c11, av, b1)
            av = SIMD8<Float>(repeating: pa[2])
            c20 = fmadd(c20, av, b0); c21 = fmadd(c21, av, b1)
            av = SIMD8<Float>(repeating: pa[3])
            c30 = fmadd(c30, av, b0); c31 = fmadd(c31, av, b1)
            av = SIMD8<Float>(repeating: pa[4])
            c40 = fmadd(c40, av, b0); c41 = fmadd(c41, av, b1)
            av = SIMD8<Float>(repeating: pa[5])
            c50 = fmadd(c50, av, b0); c51 = fmadd(c51, av, b1)
            pa += 6; pb += 16
        }
        if accumulate {
            c00 += load8(c); c01 += load8(c + 8)
            c10 += load8(c + ldc); c11 += load8(c + ldc + 8)
            c20 += load8(c + 2 * ldc); c21 += load8(c + 2 * ldc + 8)
            c30 += load8(c + 3 * ldc); c31 += load8(c + 3 * ldc + 8)
            c40 += load8(c + 4 * ldc); c41 += load8(c + 4 * ldc + 8)
            c50 += load8(c + 5 * ldc); c51 += load8(c + 5 * ldc + 8)
        }
        store8(c00, c); store8(c01, c + 8)
        store8(c10, c + ldc); store8(c11, c + ldc + 8)
        store8(c20, c + 2 * ldc); store8(c21, c + 2 * ldc + 8)
        store8(c30, c + 3 * ldc); store8(c31, c + 3 * ldc + 8)
        store8(c40, c + 4 * ldc); store8(c41, c + 4 * ldc + 8)
        store8(c50, c + 5 * ldc); store8(c51, c + 5 * ldc + 8)
    }
}

extension Reference {
    /// Plain triple loop with the same operand conventions as `Gemm.sgemm` (the test oracle).
    public static func sgemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, aRowStride: Int, aColStride: Int,
        b: UnsafePointer<Float>, bRowStride: Int, bColStride: Int,
        c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool = false
    ) {
        for i in 0..<m {
            for j in 0..<n {
                var s: Double = 0
                for p in 0..<k { s += Double(a[i * aRowStride + p * aColStride]) * Double(b[p * bRowStride + j * bColStride]) }
                c[i * ldc + j] = accumulate ? c[i * ldc + j] + Float(s) : Float(s)
            }
        }
    }
}
