/// Bilinear resize with `align_corners=True` on NCHW8c buffers (RANet's fusion, up and down),
/// SIMD8 across a block's channels; the same taps and arithmetic order as
/// `Ops.resizeBilinearAlignCorners`, so the results are identical.
extension BlockedOps {
    /// x: [N, C, H, W] → y: [N, C, Ho, Wo] (the interior of y).
    public static func resizeBilinearAlignCorners(_ x: BlockedBuffer, into y: BlockedBuffer, threads: Int? = nil) {
        let s = x.shape, o = y.shape
        precondition(s.n == o.n && s.c == o.c, "resize: \(s) into \(o)")
        let ys = ResizeTaps(input: s.h, output: o.h), xs = ResizeTaps(input: s.w, output: o.w)
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let src = UnsafePointer(x.pointer + t * s.blockStride), dst = y.pointer + t * o.blockStride
            for oy in 0..<o.h {
                let r0 = src + s.pixelOffset(ys.i0[oy], 0), r1 = src + s.pixelOffset(ys.i1[oy], 0)
                let fy = SIMD8<Float>(repeating: ys.frac[oy]), gy = SIMD8<Float>(repeating: 1 - ys.frac[oy])
                let d = dst + o.pixelOffset(oy, 0)
                for ox in 0..<o.w {
                    let a = xs.i0[ox] * 8, b = xs.i1[ox] * 8
                    let fx = SIMD8<Float>(repeating: xs.frac[ox]), gx = SIMD8<Float>(repeating: 1 - xs.frac[ox])
                    let top = gx * load8(r0 + a) + fx * load8(r0 + b)
                    let bottom = gx * load8(r1 + a) + fx * load8(r1 + b)
                    store8(gy * top + fy * bottom, d + ox * 8)
                }
            }
        }
    }

    /// Gradient of `resizeBilinearAlignCorners`: dx (interior overwritten) from g = dL/dy.
    public static func resizeBilinearAlignCornersBackward(_ g: BlockedBuffer, into dx: BlockedBuffer, threads: Int? = nil) {
        let s = dx.shape, o = g.shape
        precondition(s.n == o.n && s.c == o.c, "resize backward: \(o) into \(s)")
        let ys = ResizeTaps(input: s.h, output: o.h), xs = ResizeTaps(input: s.w, output: o.w)
        zeroInterior(dx, threads: threads)
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let src = UnsafePointer(g.pointer + t * o.blockStride), dst = dx.pointer + t * s.blockStride
            for oy in 0..<o.h {
                let r0 = dst + s.pixelOffset(ys.i0[oy], 0), r1 = dst + s.pixelOffset(ys.i1[oy], 0)
                let fy = SIMD8<Float>(repeating: ys.frac[oy]), gy = SIMD8<Float>(repeating: 1 - ys.frac[oy])
                let gRow = src + o.pixelOffset(oy, 0)
                for ox in 0..<o.w {
                    let a = xs.i0[ox] * 8, b = xs.i1[ox] * 8
                    let fx = SIMD8<Float>(repeating: xs.frac[ox]), gx = SIMD8<Float>(repeating: 1 - xs.frac[ox])
                    let v = load8(gRow + ox * 8)
                    let top = gy * v, bottom = fy * v
                    store8(load8(r0 + a) + gx * top, r0 + a)
                    store8(load8(r0 + b) + fx * top, r0 + b)
                    store8(load8(r1 + a) + gx * bottom, r1 + a)
                    store8(load8(r1 + b) + fx * bottom, r1 + b)
                }
            }
        }
    }
}
