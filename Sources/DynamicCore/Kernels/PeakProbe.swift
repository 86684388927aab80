/// Measures the machine's FP32 FMA throughput with register-only work (12 independent
/// accumulators, no memory traffic) at the kernels' vector width: the honest denominator for
/// "% of peak". With AVX-512 on a core with full-width FMA units (Zen 5, Intel server cores)
/// the 16-lane probe measures twice the 8-lane figure.
public enum PeakProbe {
    /// Runs `iterations` × 12 FMAs on vectors of `width` lanes and returns a checksum so the
    /// work cannot be optimized away.
    public static func fmaLoop(iterations: Int, seed: Float, width: KernelWidth = KernelWidth.current) -> Float {
        width == .simd16 ? fmaLoop16(iterations: iterations, seed: seed) : fmaLoop8(iterations: iterations, seed: seed)
    }

    /// FLOPs done by `fmaLoop(iterations:width:)`.
    public static func flops(iterations: Int, width: KernelWidth = KernelWidth.current) -> Double {
        Double(iterations) * 12 * 2 * (width == .simd16 ? 16 : 8)
    }

    @inline(never)
    static func fmaLoop8(iterations: Int, seed: Float) -> Float {
        let a = SIMD8<Float>(repeating: 0.999_999), b = SIMD8<Float>(repeating: 1e-7)
        var c0 = SIMD8<Float>(repeating: seed), c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5
        var c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11
        for _ in 0..<iterations {
            c0 = fmadd(b, c0, a); c1 = fmadd(b, c1, a); c2 = fmadd(b, c2, a); c3 = fmadd(b, c3, a)
            c4 = fmadd(b, c4, a); c5 = fmadd(b, c5, a); c6 = fmadd(b, c6, a); c7 = fmadd(b, c7, a)
            c8 = fmadd(b, c8, a); c9 = fmadd(b, c9, a); c10 = fmadd(b, c10, a); c11 = fmadd(b, c11, a)
        }
        let s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11))
        return s.sum()
    }

    @inline(never)
    static func fmaLoop16(iterations: Int, seed: Float) -> Float {
        let a = SIMD16<Float>(repeating: 0.999_999), b = SIMD16<Float>(repeating: 1e-7)
        var c0 = SIMD16<Float>(repeating: seed), c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5
        var c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11
        for _ in 0..<iterations {
            c0 = fmadd(b, c0, a); c1 = fmadd(b, c1, a); c2 = fmadd(b, c2, a); c3 = fmadd(b, c3, a)
            c4 = fmadd(b, c4, a); c5 = fmadd(b, c5, a); c6 = fmadd(b, c6, a); c7 = fmadd(b, c7, a)
            c8 = fmadd(b, c8, a); c9 = fmadd(b, c9, a); c10 = fmadd(b, c10, a); c11 = fmadd(b, c11, a)
        }
        let s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11))
        return s.sum()
    }
}
