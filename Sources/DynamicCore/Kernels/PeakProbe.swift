import DynamicShims

/// Measures the machine's FP32 FMA throughput with register-only work (12 independent
/// accumulators, no memory traffic) at the kernels' vector width: the honest denominator for
/// "% of peak". With AVX-512 on a core with full-width FMA units (Zen 5, Intel server cores)
/// the 16-lane probe measures twice the 8-lane figure.
public enum PeakProbe {
    /// Runs `iterations` × 12 FMAs on vectors of `width` lanes and returns a checksum so the
    /// work cannot be optimized away.
    public static func fmaLoop(iterations: Int, seed: Float, width: KernelWidth = .fastest) -> Float {
        width == .simd16 ? fmaLoop16(iterations: iterations, seed: seed) : fmaLoop8(iterations: iterations, seed: seed)
    }

    /// FLOPs done by `fmaLoop(iterations:width:)`.
    public static func flops(iterations: Int, width: KernelWidth = .fastest) -> Double {
        Double(iterations) * 12 * 2 * (width == .simd16 ? 16 : 8)
    }

    @inline(never)
    static func fmaLoop8(iterations: Int, seed: Float) -> Float { fmaLoop(SIMD8<Float>.self, iterations, seed) }

    @inline(never)
    static func fmaLoop16(iterations: Int, seed: Float) -> Float { fmaLoop(SIMD16<Float>.self, iterations, seed) }

    /// 12 independent accumulators c ← b·c + a (fused when the target has FMA).
    @inline(__always)
    private static func fmaLoop<V: SIMD>(_: V.Type, _ iterations: Int, _ seed: Float) -> Float where V.Scalar == Float {
        let a = V(repeating: 0.999_999), b = V(repeating: 1e-7)
        @inline(__always) func f(_ c: V) -> V { dyn_target_has_fma() != 0 ? a.addingProduct(b, c) : a + b * c }
        var c0 = V(repeating: seed), c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5
        var c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11
        for _ in 0..<iterations {
            c0 = f(c0); c1 = f(c1); c2 = f(c2); c3 = f(c3); c4 = f(c4); c5 = f(c5)
            c6 = f(c6); c7 = f(c7); c8 = f(c8); c9 = f(c9); c10 = f(c10); c11 = f(c11)
        }
        let s = ((c0 + c1) + (c2 + c3)) + ((c4 + c5) + (c6 + c7)) + ((c8 + c9) + (c10 + c11))
        return s.sum()
    }
}
