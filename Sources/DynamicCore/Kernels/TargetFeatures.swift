import DynamicShims

/// What the compiler was allowed to use for this build.
public enum TargetFeatures {
    /// True when the build targets FMA (x86-64 with `-target-cpu haswell` or newer, arm64).
    /// Without it `addingProduct` is a libm call per lane, so kernels use `a + b * c`.
    public static let hasFMA: Bool = dyn_target_has_fma() != 0
    public static let hasAVX2: Bool = dyn_target_has_avx2() != 0

    public static var summary: String {
        #if arch(x86_64)
        return "x86_64 avx2=\(hasAVX2) fma=\(hasFMA)"
        #elseif arch(arm64)
        return "arm64 neon fma=true"
        #else
        return "generic fma=\(hasFMA)"
        #endif
    }
}

/// acc + a·b, fused when the target has FMA (the branch folds at compile time).
@inline(__always)
@usableFromInline
func fmadd(_ acc: SIMD8<Float>, _ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> {
    if dyn_target_has_fma() != 0 { return acc.addingProduct(a, b) }
    return acc + a * b
}

@inline(__always)
func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
}

@inline(__always)
func store8(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
}

// The stdlib's generic `pointwiseMin/Max` are not inlined for SIMD8<Float> (a call per vector,
// measured at a third of a conv's time); a compare + blend is one instruction pair.
@inline(__always)
func vmax(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: a .< b) }

@inline(__always)
func vmin(_ a: SIMD8<Float>, _ b: SIMD8<Float>) -> SIMD8<Float> { a.replacing(with: b, where: b .< a) }
