import DynamicShims
import Foundation

// The 8-lane microkernel of `BlockedConv2D` (AVX2), written by hand.
extension BlockedConv2D {

    /// 6 pixels × 16 output channels. `x + pixIn[i]` is pixel i's window origin; the reduction
    /// runs over `blocks` blocks (stride `cbStride`) × `nTaps` taps (offsets `taps`) × `lanes` values,
    /// reading `w` sequentially (16 floats per step). Epilogue: + bias, + residual, clamp to
    /// [lo, hi], store `nPix` pixels of one or two 8-channel blocks.
    @inline(never)
    static func conv6x16(_ x: UnsafePointer<Float>, _ pixIn: UnsafePointer<Int>, _ taps: UnsafePointer<Int>,
                         _ nTaps: Int, _ lanes: Int, _ blocks: Int, _ cbStride: Int, _ w: UnsafePointer<Float>,
                         _ y: UnsafeMutablePointer<Float>, _ pixOut: UnsafePointer<Int>, _ outBlockStride: Int,
                         _ nPix: Int, _ twoBlocks: Bool, _ bias: UnsafePointer<Float>,
                         _ residual: UnsafePointer<Float>?, _ lo: Float, _ hi: Float, _ stats: EpilogueSums?) {
        var c00 = SIMD8<Float>(), c01 = SIMD8<Float>(), c10 = SIMD8<Float>(), c11 = SIMD8<Float>()
        var c20 = SIMD8<Float>(), c21 = SIMD8<Float>(), c30 = SIMD8<Float>(), c31 = SIMD8<Float>()
        var c40 = SIMD8<Float>(), c41 = SIMD8<Float>(), c50 = SIMD8<Float>(), c51 = SIMD8<Float>()
        let x0 = x + pixIn[0], x1 = x + pixIn[1], x2 = x + pixIn[2]
        let x3 = x + pixIn[3], x4 = x + pixIn[4], x5 = x + pixIn[5]
        var wp = w
        var cbOff = 0
        for _ in 0..<blocks {
            for t in 0..<nTaps {
                let o = cbOff + taps[t]
                let p0 = x0 + o, p1 = x1 + o, p2 = x2 + o, p3 = x3 + o, p4 = x4 + o, p5 = x5 + o
                if lanes == 8 {
                    // Channel blocks: fully unrolled, constant offsets, no loop overhead.
                    var b0: SIMD8<Float>, b1: SIMD8<Float>, a: SIMD8<Float>
                    b0 = load8(wp + 0); b1 = load8(wp + 8)
                    a = SIMD8<Float>(repeating: p0[0]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[0]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[0]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[0]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[0]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[0]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 16); b1 = load8(wp + 24)
                    a = SIMD8<Float>(repeating: p0[1]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[1]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[1]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[1]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[1]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[1]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 32); b1 = load8(wp + 40)
                    a = SIMD8<Float>(repeating: p0[2]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[2]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[2]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[2]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[2]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[2]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 48); b1 = load8(wp + 56)
                    a = SIMD8<Float>(repeating: p0[3]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[3]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[3]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[3]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[3]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[3]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 64); b1 = load8(wp + 72)
                    a = SIMD8<Float>(repeating: p0[4]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[4]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[4]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[4]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[4]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[4]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 80); b1 = load8(wp + 88)
                    a = SIMD8<Float>(repeating: p0[5]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[5]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[5]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[5]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[5]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[5]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 96); b1 = load8(wp + 104)
                    a = SIMD8<Float>(repeating: p0[6]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[6]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[6]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[6]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[6]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[6]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    b0 = load8(wp + 112); b1 = load8(wp + 120)
                    a = SIMD8<Float>(repeating: p0[7]); c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[7]); c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[7]); c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[7]); c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[7]); c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[7]); c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    wp += 128
                    continue
                }
                for ci in 0..<lanes {
                    let b0 = load8(wp), b1 = load8(wp + 8)
                    var a = SIMD8<Float>(repeating: p0[ci])
                    c00 = fmadd(c00, a, b0); c01 = fmadd(c01, a, b1)
                    a = SIMD8<Float>(repeating: p1[ci])
                    c10 = fmadd(c10, a, b0); c11 = fmadd(c11, a, b1)
                    a = SIMD8<Float>(repeating: p2[ci])
                    c20 = fmadd(c20, a, b0); c21 = fmadd(c21, a, b1)
                    a = SIMD8<Float>(repeating: p3[ci])
                    c30 = fmadd(c30, a, b0); c31 = fmadd(c31, a, b1)
                    a = SIMD8<Float>(repeating: p4[ci])
                    c40 = fmadd(c40, a, b0); c41 = fmadd(c41, a, b1)
                    a = SIMD8<Float>(repeating: p5[ci])
                    c50 = fmadd(c50, a, b0); c51 = fmadd(c51, a, b1)
                    wp += 16
                }
            }
            cbOff += cbStride
        }
        var ep = Epilogue(bias: bias, residual: residual, y: y, pixOut: pixOut, blockStride: outBlockStride,
                          twoBlocks: twoBlocks, lo: lo, hi: hi, stats: stats)
        ep.store(0, c00, c01)
        if nPix > 1 { ep.store(1, c10, c11) }
        if nPix > 2 { ep.store(2, c20, c21) }
        if nPix > 3 { ep.store(3, c30, c31) }
        if nPix > 4 { ep.store(4, c40, c41) }
        if nPix > 5 { ep.store(5, c50, c51) }
        ep.finish()
    }

    /// 8 pixels × one 8-channel output block, on 8-lane vectors: for convolutions with at most 8
    /// output channels (MSDNet and RANet grow by 6 channels per layer at full resolution), where
    /// 16-channel tiles would leave most of every FMA unused. Reads the first 8 of each 16 packed
    /// weights. On cores that split 16-lane FMAs in two (Zen 4) this runs at the full FMA rate.
    @inline(never)
    static func conv8x8(_ x: UnsafePointer<Float>, _ pixIn: UnsafePointer<Int>, _ taps: UnsafePointer<Int>,
                        _ nTaps: Int, _ lanes: Int, _ blocks: Int, _ cbStride: Int, _ w: UnsafePointer<Float>,
                        _ y: UnsafeMutablePointer<Float>, _ pixOut: UnsafePointer<Int>, _ outBlockStride: Int,
                        _ nPix: Int, _ bias: UnsafePointer<Float>, _ residual: UnsafePointer<Float>?, _ lo: Float,
                        _ hi: Float, _ stats: EpilogueSums?) {
        var c0 = SIMD8<Float>(), c1 = SIMD8<Float>(), c2 = SIMD8<Float>(), c3 = SIMD8<Float>()
        var c4 = SIMD8<Float>(), c5 = SIMD8<Float>(), c6 = SIMD8<Float>(), c7 = SIMD8<Float>()
        let x0 = x + pixIn[0], x1 = x + pixIn[1], x2 = x + pixIn[2], x3 = x + pixIn[3]
        let x4 = x + pixIn[4], x5 = x + pixIn[5], x6 = x + pixIn[6], x7 = x + pixIn[7]
        var wp = w
        var cbOff = 0
        for _ in 0..<blocks {
            for t in 0..<nTaps {
                let o = cbOff + taps[t]
                let p0 = x0 + o, p1 = x1 + o, p2 = x2 + o, p3 = x3 + o, p4 = x4 + o, p5 = x5 + o, p6 = x6 + o, p7 = x7 + o
                for ci in 0..<lanes {
                    let b = load8(wp)
                    c0 = fmadd(c0, SIMD8<Float>(repeating: p0[ci]), b)
                    c1 = fmadd(c1, SIMD8<Float>(repeating: p1[ci]), b)
                    c2 = fmadd(c2, SIMD8<Float>(repeating: p2[ci]), b)
                    c3 = fmadd(c3, SIMD8<Float>(repeating: p3[ci]), b)
                    c4 = fmadd(c4, SIMD8<Float>(repeating: p4[ci]), b)
                    c5 = fmadd(c5, SIMD8<Float>(repeating: p5[ci]), b)
                    c6 = fmadd(c6, SIMD8<Float>(repeating: p6[ci]), b)
                    c7 = fmadd(c7, SIMD8<Float>(repeating: p7[ci]), b)
                    wp += 16
                }
            }
            cbOff += cbStride
        }
        var ep = Epilogue(bias: bias, residual: residual, y: y, pixOut: pixOut, blockStride: outBlockStride,
                          twoBlocks: false, lo: lo, hi: hi, stats: stats)
        let zero = SIMD8<Float>()
        ep.store(0, c0, zero)
        if nPix > 1 { ep.store(1, c1, zero) }
        if nPix > 2 { ep.store(2, c2, zero) }
        if nPix > 3 { ep.store(3, c3, zero) }
        if nPix > 4 { ep.store(4, c4, zero) }
        if nPix > 5 { ep.store(5, c5, zero) }
        if nPix > 6 { ep.store(6, c6, zero) }
        if nPix > 7 { ep.store(7, c7, zero) }
        ep.finish()
    }
}
