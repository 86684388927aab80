/// Geometry of a 2-D pooling window (PyTorch `MaxPool2d` / `AvgPool2d`, floor mode).
public struct Pool2DConfig: Hashable, Sendable {
    public var kernelH: Int, kernelW: Int, strideH: Int, strideW: Int, padH: Int, padW: Int
    /// Average pooling only: divide by k² including padded positions (PyTorch's default).
    public var countIncludePad: Bool

    /// The input rows and columns that output pixel (oy, ox) of an h × w input pools over,
    /// and the average's divisor (PyTorch's rule: padding counts when `countIncludePad`).
    @inline(__always)
    public func window(_ oy: Int, _ ox: Int, height h: Int, width w: Int) -> (rows: Range<Int>, cols: Range<Int>, divisor: Int) {
        let y0 = oy * strideH - padH, x0 = ox * strideW - padW
        let rows = Swift.max(y0, 0)..<Swift.min(y0 + kernelH, h), cols = Swift.max(x0, 0)..<Swift.min(x0 + kernelW, w)
        let divisor = countIncludePad
            ? (Swift.min(y0 + kernelH, h + padH) - y0) * (Swift.min(x0 + kernelW, w + padW) - x0)
            : rows.count * cols.count
        return (rows, cols, divisor)
    }

    public init(kernelSize: Int, stride: Int? = nil, padding: Int = 0, countIncludePad: Bool = true) {
        let s = stride ?? kernelSize
        precondition(kernelSize > 0 && s > 0 && padding >= 0 && 2 * padding <= kernelSize,
                     "pad must be at most half the kernel (PyTorch rule)")
        (kernelH, kernelW, strideH, strideW, padH, padW) = (kernelSize, kernelSize, s, s, padding, padding)
        self.countIncludePad = countIncludePad
    }

    public func outputSize(h: Int, w: Int) -> (h: Int, w: Int) {
        ((h + 2 * padH - kernelH) / strideH + 1, (w + 2 * padW - kernelW) / strideW + 1)
    }
}

extension Ops {
    /// Max pooling, x: [N, C, H, W] → [N, C, Ho, Wo]; padding never wins (−∞).
    public static func maxPool2d(_ x: Tensor, _ p: Pool2DConfig) -> Tensor { pool(x, p, isMax: true) }

    /// Average pooling, x: [N, C, H, W] → [N, C, Ho, Wo].
    public static func avgPool2d(_ x: Tensor, _ p: Pool2DConfig) -> Tensor { pool(x, p, isMax: false) }

    static func pool(_ x: Tensor, _ p: Pool2DConfig, isMax: Bool) -> Tensor {
        precondition(x.rank == 4, "pooling expects [N, C, H, W], got \(x.shape)")
        let (h, w) = (x.shape[2], x.shape[3])
        let (ho, wo) = p.outputSize(h: h, w: w)
        precondition(ho > 0 && wo > 0, "pooling input \(x.shape) too small")
        let planes = x.shape[0] * x.shape[1]
        return x.withUnsafeBufferPointer { xb in
            Tensor(shape: [x.shape[0], x.shape[1], ho, wo]) { yb in
                for pl in 0..<planes {
                    let src = xb.baseAddress! + pl * h * w, dst = yb.baseAddress! + pl * ho * wo
                    for oh in 0..<ho {
                        let h0 = oh * p.strideH - p.padH
                        let ha = Swift.max(h0, 0), hb = Swift.min(h0 + p.kernelH, h)
                        for ow in 0..<wo {
                            let w0 = ow * p.strideW - p.padW
                            let wa = Swift.max(w0, 0), wb = Swift.min(w0 + p.kernelW, w)
                            var acc: Float = isMax ? -.infinity : 0
                            for ih in ha..<hb {
                                let row = src + ih * w
                                for iw in wa..<wb { acc = isMax ? Swift.max(acc, row[iw]) : acc + row[iw] }
                            }
                            if !isMax {
                                let n = p.countIncludePad
                                    ? (Swift.min(h0 + p.kernelH, h + p.padH) - h0) * (Swift.min(w0 + p.kernelW, w + p.padW) - w0)
                                    : (hb - ha) * (wb - wa)
                                acc /= Float(n)
                            }
                            dst[oh * wo + ow] = acc
                        }
                    }
                }
            }
        }
    }

    /// Global average pooling, x: [N, C, H, W] → [N, C].
    public static func globalAvgPool(_ x: Tensor) -> Tensor {
        precondition(x.rank == 4, "global average pooling expects [N, C, H, W], got \(x.shape)")
        let planes = x.shape[0] * x.shape[1], plane = x.shape[2] * x.shape[3]
        let inv = 1 / Float(plane)
        return x.withUnsafeBufferPointer { xb in
            Tensor(shape: [x.shape[0], x.shape[1]]) { yb in
                for pl in 0..<planes {
                    let s = xb.baseAddress! + pl * plane
                    var acc = SIMD8<Float>()
                    var i = 0
                    while i + 8 <= plane { acc += load8(s + i); i += 8 }
                    var t = acc.sum()
                    while i < plane { t += s[i]; i += 1 }
                    yb[pl] = t * inv
                }
            }
        }
    }
}

extension Reference {
    public static func maxPool2d(_ x: Tensor, _ p: Pool2DConfig) -> Tensor { pool(x, p, isMax: true) }
    public static func avgPool2d(_ x: Tensor, _ p: Pool2DConfig) -> Tensor { pool(x, p, isMax: false) }

    static func pool(_ x: Tensor, _ p: Pool2DConfig, isMax: Bool) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (ho, wo) = p.outputSize(h: h, w: w)
        var y = Tensor(zeros: [n, c, ho, wo])
        for b in 0..<n { for ch in 0..<c { for oh in 0..<ho { for ow in 0..<wo {
            var best = -Float.infinity, sum = 0.0, inside = 0
            for ki in 0..<p.kernelH { for kj in 0..<p.kernelW {
                let ih = oh * p.strideH - p.padH + ki, iw = ow * p.strideW - p.padW + kj
                guard ih >= 0, ih < h, iw >= 0, iw < w else { continue }
                let v = x[b, ch, ih, iw]
                best = Swift.max(best, v); sum += Double(v); inside += 1
            } }
            // With count_include_pad, padded cells inside the padded image count; cells past it never do.
            let hEnd = Swift.min(oh * p.strideH - p.padH + p.kernelH, h + p.padH)
            let wEnd = Swift.min(ow * p.strideW - p.padW + p.kernelW, w + p.padW)
            let divisor = p.countIncludePad ? (hEnd - (oh * p.strideH - p.padH)) * (wEnd - (ow * p.strideW - p.padW)) : inside
            y[b, ch, oh, ow] = isMax ? best : Float(sum / Double(divisor))
        } } } }
        return y
    }

    public static func globalAvgPool(_ x: Tensor) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y = Tensor(zeros: [n, c])
        for b in 0..<n { for ch in 0..<c {
            var s = 0.0
            for i in 0..<h { for j in 0..<w { s += Double(x[b, ch, i, j]) } }
            y[b, ch] = Float(s / Double(h * w))
        } }
        return y
    }
}
