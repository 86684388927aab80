import DynamicShims

/// What the compiler was allowed to use for this build.
public enum TargetFeatures {
    /// True when the build targets FMA (x86-64 with `-target-cpu native` on an FMA CPU, or
    /// `haswell` or newer; arm64).
    /// Without it `addingProduct` is a libm call per lane, so kernels use `a + b * c`.
    public static let hasFMA: Bool = dyn_target_has_fma() != 0
    public static let hasAVX2: Bool = dyn_target_has_avx2() != 0
    /// True when the build targets AVX-512F (`-target-cpu native` on such a machine): the
    /// 16-lane kernels then run on zmm registers at twice the FMA width of AVX2.
    public static let hasAVX512: Bool = dyn_target_has_avx512f() != 0

    public static var summary: String {
        #if arch(x86_64)
        return "x86_64 avx2=\(hasAVX2) avx512=\(hasAVX512) fma=\(hasFMA)"
        #elseif arch(arm64)
        return "arm64 neon fma=true"
        #else
        return "generic fma=\(hasFMA)"
        #endif
    }
}

/// The vector width of the convolution kernels: 8 lanes (`SIMD8`, one AVX2 ymm register) or 16
/// (`SIMD16`, one AVX-512 zmm). Both are correct on every target.
public enum KernelWidth: String, Sendable, CaseIterable, CustomStringConvertible {
    case simd8, simd16

    /// The width this build runs fastest: 16 lanes when it targets AVX-512.
    public static let fastest: KernelWidth = TargetFeatures.hasAVX512 ? .simd16 : .simd8

    public var description: String { rawValue }
}

/// Which convolution kernels a packed convolution runs on. The default is the fastest this build
/// has; tests and `dynbench` pass others to check and time them (`--width`, `--no-winograd`).
public struct KernelOptions: Hashable, Sendable, CustomStringConvertible {
    /// The vector width of the direct kernels.
    public var width: KernelWidth
    /// Whether eligible 3×3 stride-1 convolutions take the Winograd F(2×2, 3×3) route (16-lane
    /// kernels only); off, every convolution runs on the direct kernels.
    public var winograd: Bool

    public init(width: KernelWidth = .fastest, winograd: Bool = true) {
        (self.width, self.winograd) = (width, winograd)
    }

    /// The fastest kernels of this build.
    public static let fastest = KernelOptions()

    public var description: String { "kernels=\(width)\(winograd ? "" : " no-winograd")" }
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

/// acc + a·b on 16 lanes (one zmm register with AVX-512), fused when the target has FMA.
@inline(__always)
func fmadd(_ acc: SIMD16<Float>, _ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> {
    if dyn_target_has_fma() != 0 { return acc.addingProduct(a, b) }
    return acc + a * b
}

@inline(__always)
func load16(_ p: UnsafePointer<Float>) -> SIMD16<Float> {
    UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self)
}

@inline(__always)
func store16(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>) {
    UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self)
}

/// Two 8-channel blocks that lie `stride` floats apart (NCHW8c planes) as one 16-lane vector.
@inline(__always)
func load8x2(_ p: UnsafePointer<Float>, _ stride: Int) -> SIMD16<Float> {
    SIMD16(lowHalf: load8(p), highHalf: load8(p + stride))
}

@inline(__always)
func vmax(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> { a.replacing(with: b, where: a .< b) }

@inline(__always)
func vmin(_ a: SIMD16<Float>, _ b: SIMD16<Float>) -> SIMD16<Float> { a.replacing(with: b, where: b .< a) }
