/// Pooling and elementwise kernels on NCHW8c buffers, SIMD8 across the 8 channels of a block.
public enum BlockedOps {
    /// Global average pool of the interior: [N, C, H, W]·8c → NCHW tensor [N, C].
    public static func globalAvgPool(_ x: BlockedBuffer) -> Tensor {
        let s = x.shape
        let inv = SIMD8<Float>(repeating: 1 / Float(s.h * s.w))
        return Tensor(shape: [s.n, s.c]) { out in
            for n in 0..<s.n {
                for b in 0..<s.blocks {
                    let base = x.pointer + n * s.imageStride + b * s.blockStride
                    var acc0 = SIMD8<Float>(), acc1 = SIMD8<Float>()
                    for yy in 0..<s.h {
                        let row = base + s.pixelOffset(yy, 0)
                        var xx = 0
                        while xx + 2 <= s.w { acc0 += load8(row + xx * 8); acc1 += load8(row + xx * 8 + 8); xx += 2 }
                        if xx < s.w { acc0 += load8(row + xx * 8) }
                    }
                    let m = (acc0 + acc1) * inv
                    for k in 0..<Swift.min(8, s.c - b * 8) { out[n * s.c + b * 8 + k] = m[k] }
                }
            }
        }
    }

    /// Max or average pooling window over the interior (padding never wins a max; average
    /// divides like PyTorch with `countIncludePad`). x: [N, C, H, W] → y: [N, C, Ho, Wo].
    public static func pool(_ x: BlockedBuffer, into y: BlockedBuffer, _ p: Pool2DConfig, isMax: Bool) {
        let s = x.shape, o = y.shape
        precondition(o.n == s.n && o.c == s.c && (o.h, o.w) == p.outputSize(h: s.h, w: s.w), "pool output \(o) mismatched")
        for n in 0..<s.n {
            for b in 0..<s.blocks {
                let src = x.pointer + n * s.imageStride + b * s.blockStride
                let dst = y.pointer + n * o.imageStride + b * o.blockStride
                for oy in 0..<o.h {
                    let y0 = oy * p.strideH - p.padH
                    let ya = Swift.max(y0, 0), yb = Swift.min(y0 + p.kernelH, s.h)
                    for ox in 0..<o.w {
                        let x0 = ox * p.strideW - p.padW
                        let xa = Swift.max(x0, 0), xb = Swift.min(x0 + p.kernelW, s.w)
                        var acc = SIMD8<Float>(repeating: isMax ? -.infinity : 0)
                        for yy in ya..<yb {
                            for xx in xa..<xb {
                                let v = load8(src + s.pixelOffset(yy, xx))
                                acc = isMax ? vmax(acc, v) : acc + v
                            }
                        }
                        if !isMax {
                            let count = p.countIncludePad
                                ? (Swift.min(y0 + p.kernelH, s.h + p.padH) - y0) * (Swift.min(x0 + p.kernelW, s.w + p.padW) - x0)
                                : (yb - ya) * (xb - xa)
                            acc *= SIMD8(repeating: 1 / Float(count))
                        }
                        store8(acc, dst + o.pixelOffset(oy, ox))
                    }
                }
            }
        }
    }
}
