/// Measures the machine's FP32 FMA throughput with register-only SIMD8 work (12 independent
/// accumulators, no memory traffic): the honest denominator for "% of peak".
public enum PeakProbe {
    /// Runs `iterations` × 12 SIMD8 FMAs (each 16 FLOPs) and returns a checksum so the work
    /// cannot be optimized away.
    @inline(never)
    public static func fmaLoop(iterations: Int, seed: Float) -> Float {
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

    /// FLOPs done by `fmaLoop(iterations:)`.
    public static func flops(iterations: Int) -> Double { Double(iterations) * 12 * 16 }
}
