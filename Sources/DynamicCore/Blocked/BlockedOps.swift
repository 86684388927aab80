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
    public static func pool(_ x: BlockedBuffer, into y: BlockedBuffer, _ p: Pool2DConfig, isMax: Bool, threads: Int? = nil) {
        let s = x.shape, o = y.shape
        precondition(o.n == s.n && o.c == s.c && (o.h, o.w) == p.outputSize(h: s.h, w: s.w), "pool output \(o) mismatched")
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let (n, b) = (t / s.blocks, t % s.blocks)
            let src = x.pointer + n * s.imageStride + b * s.blockStride
            let dst = y.pointer + n * o.imageStride + b * o.blockStride
            for oy in 0..<o.h {
                for ox in 0..<o.w {
                    let win = p.window(oy, ox, height: s.h, width: s.w)
                    var acc = SIMD8<Float>(repeating: isMax ? -.infinity : 0)
                    for yy in win.rows {
                        for xx in win.cols {
                            let v = load8(src + s.pixelOffset(yy, xx))
                            acc = isMax ? vmax(acc, v) : acc + v
                        }
                    }
                    if !isMax { acc *= SIMD8(repeating: 1 / Float(win.divisor)) }
                    store8(acc, dst + o.pixelOffset(oy, ox))
                }
            }
        }
    }
}

/// Depthwise convolution (groups = channels, one filter per channel) on NCHW8c buffers,
/// kernel `f32-dwconv-nchw8c`: SIMD8 across a block's channels, 4 output pixels per step.
/// Weights are packed once as [blocks][taps][8]; any kernel size, stride, padding ≤ halo, dilation.
public final class BlockedDepthwiseConv2D: @unchecked Sendable {
    public static let kernelName = "f32-dwconv-nchw8c"
    public let config: Conv2DConfig
    let packed: UnsafeMutablePointer<Float>
    let bias: UnsafeMutablePointer<Float>

    /// weight: [C, 1, kh, kw]; bias: [C] or nil; config.groups == inChannels == outChannels.
    public init(weight: Tensor, bias: Tensor?, config c: Conv2DConfig) {
        precondition(c.groups == c.inChannels && c.outChannels == c.inChannels, "depthwise needs groups = in = out channels")
        precondition(weight.shape == c.weightShape, "weight must be \(c.weightShape), got \(weight.shape)")
        config = c
        let blocks = (c.inChannels + 7) / 8, taps = c.kernelH * c.kernelW
        packed = .allocate(capacity: blocks * taps * 8)
        packed.initialize(repeating: 0, count: blocks * taps * 8)
        self.bias = .allocate(capacity: blocks * 8)
        self.bias.initialize(repeating: 0, count: blocks * 8)
        weight.withUnsafeBufferPointer { w in
            for ch in 0..<c.inChannels {
                for t in 0..<taps { packed[((ch / 8) * taps + t) * 8 + ch % 8] = w[ch * taps + t] }
            }
        }
        bias?.withUnsafeBufferPointer { for i in 0..<c.outChannels { self.bias[i] = $0[i] } }
    }

    deinit { packed.deallocate(); bias.deallocate() }

    public func outputShape(n: Int, h: Int, w: Int, halo: Int) -> BlockedShape {
        let o = config.outputSize(h: h, w: w)
        return BlockedShape(n: n, c: config.outChannels, h: o.h, w: o.w, halo: halo)
    }

    /// y = act(dwconv(x) + bias); x: [N, C, H, W] with halo ≥ padding → y: [N, C, Ho, Wo].
    public func run(_ input: BlockedBuffer, into output: BlockedBuffer, activation: Activation = .identity,
                    threads: Int? = nil) {
        let c = config, si = input.shape, so = output.shape
        precondition(si.c == c.inChannels && si.halo >= c.padH && si.halo >= c.padW, "depthwise input \(si) mismatched")
        precondition(so == outputShape(n: si.n, h: si.h, w: si.w, halo: so.halo), "depthwise output \(so) mismatched")
        let taps = c.kernelH * c.kernelW
        var tapOffsets = [Int](repeating: 0, count: taps)
        for ki in 0..<c.kernelH {
            for kj in 0..<c.kernelW { tapOffsets[ki * c.kernelW + kj] = (ki * c.dilationH * si.wp + kj * c.dilationW) * 8 }
        }
        let (lo, hi) = BlockedConv2D.clampBounds(activation)
        let lov = SIMD8<Float>(repeating: lo), hiv = SIMD8<Float>(repeating: hi)
        let planes = si.n * si.blocks
        let (x, y) = (UnsafePointer(input.pointer), output.pointer)
        tapOffsets.withUnsafeBufferPointer { tp in
            Parallel.forEach(planes, threads: threads) { plane in
                let n = plane / si.blocks, b = plane % si.blocks
                let src = x + n * si.imageStride + b * si.blockStride
                let dst = y + n * so.imageStride + b * so.blockStride
                let wk = UnsafePointer(self.packed + b * taps * 8)
                let bv = load8(self.bias + b * 8)
                let step = c.strideW * 8
                for oy in 0..<so.h {
                    let rowIn = src + si.pixelOffset(oy * c.strideH - c.padH, -c.padW)
                    let rowOut = dst + so.pixelOffset(oy, 0)
                    var ox = 0
                    while ox + 4 <= so.w {
                        var a0 = bv, a1 = bv, a2 = bv, a3 = bv
                        let p = rowIn + ox * step
                        for t in 0..<taps {
                            let wv = load8(wk + t * 8), q = p + tp[t]
                            a0 = fmadd(a0, load8(q), wv); a1 = fmadd(a1, load8(q + step), wv)
                            a2 = fmadd(a2, load8(q + 2 * step), wv); a3 = fmadd(a3, load8(q + 3 * step), wv)
                        }
                        store8(vmin(vmax(a0, lov), hiv), rowOut + ox * 8)
                        store8(vmin(vmax(a1, lov), hiv), rowOut + ox * 8 + 8)
                        store8(vmin(vmax(a2, lov), hiv), rowOut + ox * 8 + 16)
                        store8(vmin(vmax(a3, lov), hiv), rowOut + ox * 8 + 24)
                        ox += 4
                    }
                    while ox < so.w {
                        var a = bv
                        let p = rowIn + ox * step
                        for t in 0..<taps { a = fmadd(a, load8(p + tp[t]), load8(wk + t * 8)) }
                        store8(vmin(vmax(a, lov), hiv), rowOut + ox * 8)
                        ox += 1
                    }
                }
            }
        }
    }
}

extension BlockedOps {
    /// a += b over the whole buffers (halos are zero in both and stay zero). Shapes must match.
    public static func addInPlace(_ a: BlockedBuffer, _ b: BlockedBuffer, threads: Int? = nil) {
        precondition(a.shape == b.shape, "addInPlace: \(a.shape) vs \(b.shape)")
        let s = a.shape
        let (ap, bp) = (a.pointer, UnsafePointer(b.pointer))
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let base = t * s.blockStride
            for i in stride(from: base, to: base + s.blockStride, by: 8) { store8(load8(ap + i) + load8(bp + i), ap + i) }
        }
    }

    /// Copies the interior of x into y (same n, c, h, w; any halos). y's halo is left as it is.
    public static func copyInterior(_ x: BlockedBuffer, into y: BlockedBuffer, threads: Int? = nil) {
        let s = x.shape, o = y.shape
        precondition((s.n, s.c, s.h, s.w) == (o.n, o.c, o.h, o.w), "copyInterior: \(s) vs \(o)")
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let src = x.pointer + t * s.blockStride, dst = y.pointer + t * o.blockStride
            for row in 0..<s.h {
                (dst + o.pixelOffset(row, 0)).update(from: src + s.pixelOffset(row, 0), count: s.w * 8)
            }
        }
    }
}

extension BlockedOps {
    /// Gradient of `pool`: dx [N, C, H, W] (interior overwritten, halo untouched) from
    /// g = dL/dy [N, C, Ho, Wo] and, for max pooling, the forward input x. A max routes each
    /// output's gradient to the first cell of its window holding the maximum (PyTorch's and
    /// `Ops.maxPool2dBackward`'s choice); an average spreads it over the window by the forward's divisor.
    public static func poolBackward(_ g: BlockedBuffer, input x: BlockedBuffer?, into dx: BlockedBuffer, _ p: Pool2DConfig,
                                    isMax: Bool, threads: Int? = nil) {
        let s = dx.shape, o = g.shape
        precondition(o.n == s.n && o.c == s.c && (o.h, o.w) == p.outputSize(h: s.h, w: s.w), "pool gradient \(o) mismatched")
        precondition(!isMax || x.map { ($0.shape.n, $0.shape.c, $0.shape.h, $0.shape.w) == (s.n, s.c, s.h, s.w) } == true,
                     "max pool backward needs the forward input")
        let zero = SIMD8<Float>()
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let (n, b) = (t / s.blocks, t % s.blocks)
            let dst = dx.pointer + n * s.imageStride + b * s.blockStride
            for yy in 0..<s.h { for xx in 0..<s.w { store8(zero, dst + s.pixelOffset(yy, xx)) } }
            let gp = g.pointer + n * o.imageStride + b * o.blockStride
            let xs = x.map { $0.shape }
            let src = x.map { $0.pointer + n * $0.shape.imageStride + b * $0.shape.blockStride }
            for oy in 0..<o.h {
                for ox in 0..<o.w {
                    let win = p.window(oy, ox, height: s.h, width: s.w)
                    let gv = load8(gp + o.pixelOffset(oy, ox))
                    if isMax, let src, let xs {
                        var best = SIMD8<Float>(repeating: -.infinity)
                        var at = SIMD8<Int32>(repeating: Int32(win.rows.lowerBound * s.w + win.cols.lowerBound))
                        for yy in win.rows {
                            for xx in win.cols {
                                let v = load8(src + xs.pixelOffset(yy, xx))
                                let m = v .> best
                                best.replace(with: v, where: m)
                                at.replace(with: Int32(yy * s.w + xx), where: m)
                            }
                        }
                        for k in 0..<8 {
                            let cell = Int(at[k])
                            dst[s.pixelOffset(cell / s.w, cell % s.w) + k] += gv[k]
                        }
                    } else {
                        let share = gv * SIMD8(repeating: 1 / Float(win.divisor))
                        for yy in win.rows {
                            for xx in win.cols {
                                let q = dst + s.pixelOffset(yy, xx)
                                store8(load8(q) + share, q)
                            }
                        }
                    }
                }
            }
        }
    }
}
