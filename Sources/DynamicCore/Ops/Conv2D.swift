/// Geometry of a 2-D convolution (PyTorch `nn.Conv2d` semantics).
public struct Conv2DConfig: Hashable, Sendable {
    public var inChannels: Int, outChannels: Int
    public var kernelH: Int, kernelW: Int
    public var strideH: Int, strideW: Int
    public var padH: Int, padW: Int
    public var dilationH: Int, dilationW: Int
    public var groups: Int

    public init(inChannels: Int, outChannels: Int, kernelSize: (Int, Int), stride: (Int, Int) = (1, 1),
                padding: (Int, Int) = (0, 0), dilation: (Int, Int) = (1, 1), groups: Int = 1) {
        precondition(inChannels > 0 && outChannels > 0 && groups > 0, "channels and groups must be positive")
        precondition(inChannels % groups == 0 && outChannels % groups == 0,
                     "channels \(inChannels)→\(outChannels) not divisible by groups \(groups)")
        precondition(kernelSize.0 > 0 && kernelSize.1 > 0 && stride.0 > 0 && stride.1 > 0
                     && padding.0 >= 0 && padding.1 >= 0 && dilation.0 > 0 && dilation.1 > 0)
        self.inChannels = inChannels; self.outChannels = outChannels
        (kernelH, kernelW) = kernelSize
        (strideH, strideW) = stride
        (padH, padW) = padding
        (dilationH, dilationW) = dilation
        self.groups = groups
    }

    /// Square kernel, stride, padding and dilation.
    public init(inChannels: Int, outChannels: Int, kernelSize: Int, stride: Int = 1, padding: Int = 0,
                dilation: Int = 1, groups: Int = 1) {
        self.init(inChannels: inChannels, outChannels: outChannels, kernelSize: (kernelSize, kernelSize),
                  stride: (stride, stride), padding: (padding, padding), dilation: (dilation, dilation),
                  groups: groups)
    }

    /// `[outChannels, inChannels / groups, kernelH, kernelW]`
    public var weightShape: [Int] { [outChannels, inChannels / groups, kernelH, kernelW] }

    /// Output height and width for an input of `h × w` (may be ≤ 0 when the input is too small).
    public func outputSize(h: Int, w: Int) -> (h: Int, w: Int) {
        ((h + 2 * padH - dilationH * (kernelH - 1) - 1) / strideH + 1,
         (w + 2 * padW - dilationW * (kernelW - 1) - 1) / strideW + 1)
    }

    /// Multiply-adds per image for an `h × w` input (no bias), the papers' counting rule.
    public func macs(h: Int, w: Int) -> Int {
        let o = outputSize(h: h, w: w)
        return outChannels * (inChannels / groups) * kernelH * kernelW * o.h * o.w
    }

    func checkShapes(_ x: Tensor, _ weight: Tensor, _ bias: Tensor?) {
        precondition(x.rank == 4 && x.shape[1] == inChannels,
                     "conv2d expects [N, \(inChannels), H, W], got \(x.shape)")
        precondition(weight.shape == weightShape, "conv2d weight must be \(weightShape), got \(weight.shape)")
        if let b = bias { precondition(b.shape == [outChannels], "conv2d bias must be [\(outChannels)], got \(b.shape)") }
        let o = outputSize(h: x.shape[2], w: x.shape[3])
        precondition(o.h > 0 && o.w > 0, "conv2d input \(x.shape) too small for \(self)")
    }
}

extension Ops {
    /// 2-D convolution, x: [N, Cin, H, W], weight: [Cout, Cin/groups, kh, kw], bias: [Cout]
    /// → [N, Cout, Ho, Wo], with `activation` applied in the epilogue.
    ///
    /// Kernels: groups = 1 runs `BlockedConv2D` (NCHW8c direct convolution); one input channel
    /// per group (depthwise, multiplier ≥ 1) runs a direct sliding loop; other grouped
    /// convolutions are GEMM over the weight and the image (1×1 stride 1: the image itself,
    /// otherwise an im2col buffer). Threads split images when N ≥ 2, else GEMM columns.
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, config c: Conv2DConfig,
                              activation: Activation = .identity, threads: Int? = nil) -> Tensor {
        c.checkShapes(x, weight, bias)
        if c.groups == 1, activation.isClamp {
            // Dense convolutions: the NCHW8c direct kernel, layouts converted at the boundary
            // (2–4× faster than im2col + GEMM even with the conversions and per-call packing).
            return BlockedConv2D(weight: weight, bias: bias, config: c)(x, activation: activation, threads: threads)
        }
        let n = x.shape[0], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = c.outputSize(h: h, w: w)
        let threads = threads ?? Parallel.defaultThreads
        var y = Tensor(zeros: [n, c.outChannels, ho, wo])
        let inPlane = c.inChannels * h * w, outPlane = c.outChannels * ho * wo
        let cinG = c.inChannels / c.groups, coutG = c.outChannels / c.groups
        let kdim = cinG * c.kernelH * c.kernelW
        let direct1x1 = c.kernelH == 1 && c.kernelW == 1 && c.strideH == 1 && c.strideW == 1 && c.padH == 0 && c.padW == 0
        let depthwise = cinG == 1 && c.groups > 1
        let biasT = bias ?? Tensor(zeros: [c.outChannels])
        x.withUnsafeBufferPointer { xb in
            weight.withUnsafeBufferPointer { wb in
                biasT.withUnsafeBufferPointer { bb in
                    y.withUnsafeMutableBufferPointer { yb in
                        let ptrs = UncheckedSendable((xb.baseAddress!, wb.baseAddress!, bb.baseAddress!, yb.baseAddress!))
                        let imageWorkers = Swift.min(threads, n)
                        let gemmThreads = imageWorkers > 1 ? 1 : threads
                        Parallel.forEach(imageWorkers, threads: imageWorkers) { worker in
                            let (xp, wp, bp, yp) = ptrs.value
                            let col: UnsafeMutablePointer<Float>? = (depthwise || direct1x1) ? nil
                                : .allocate(capacity: kdim * ho * wo)
                            defer { col?.deallocate() }
                            var img = worker
                            while img < n {
                                let xi = xp + img * inPlane, yi = yp + img * outPlane
                                if depthwise {
                                    depthwiseImage(c, xi, h, w, wp, yi, ho, wo)
                                } else {
                                    for g in 0..<c.groups {
                                        let xg = xi + g * cinG * h * w
                                        let src: UnsafePointer<Float>
                                        if let col {
                                            im2col(c, xg, cinG, h, w, col, ho, wo)
                                            src = UnsafePointer(col)
                                        } else {
                                            src = xg
                                        }
                                        Gemm.sgemm(m: coutG, n: ho * wo, k: kdim,
                                                   a: wp + g * coutG * kdim, aRowStride: kdim, aColStride: 1,
                                                   b: src, bRowStride: ho * wo, bColStride: 1,
                                                   c: yi + g * coutG * ho * wo, ldc: ho * wo, threads: gemmThreads)
                                    }
                                }
                                biasActivationEpilogue(yi, bp, c.outChannels, ho * wo, activation)
                                img += imageWorkers
                            }
                        }
                    }
                }
            }
        }
        return y
    }

    /// y[c, :] = act(y[c, :] + bias[c]) over `channels` planes of `plane` floats.
    static func biasActivationEpilogue(_ y: UnsafeMutablePointer<Float>, _ bias: UnsafePointer<Float>,
                                       _ channels: Int, _ plane: Int, _ act: Activation) {
        for ch in 0..<channels {
            let p = y + ch * plane
            let b = bias[ch]
            if b != 0 {
                let bv = SIMD8<Float>(repeating: b)
                var i = 0
                while i + 8 <= plane { store8(load8(p + i) + bv, p + i); i += 8 }
                while i < plane { p[i] += b; i += 1 }
            }
            act.apply(p, count: plane)
        }
    }

    /// Output columns [lo, hi) whose input column ow·stride + dx lies inside a row of width w.
    @inline(__always)
    static func insideColumns(_ c: Conv2DConfig, _ dx: Int, _ w: Int, _ wo: Int) -> (Int, Int) {
        let lo = dx >= 0 ? 0 : Swift.min(wo, (-dx + c.strideW - 1) / c.strideW)
        let hi = Swift.max(lo, Swift.min(wo, (w - 1 - dx) >= 0 ? (w - 1 - dx) / c.strideW + 1 : 0))
        return (lo, hi)
    }

    /// Rows (ci, ki, kj) × columns (oh, ow) of input samples, zero outside the image.
    static func im2col(_ c: Conv2DConfig, _ x: UnsafePointer<Float>, _ cin: Int, _ h: Int, _ w: Int,
                       _ col: UnsafeMutablePointer<Float>, _ ho: Int, _ wo: Int) {
        var row = col
        for ci in 0..<cin {
            let plane = x + ci * h * w
            for ki in 0..<c.kernelH {
                for kj in 0..<c.kernelW {
                    let dy = ki * c.dilationH - c.padH, dx = kj * c.dilationW - c.padW
                    // Output columns whose input column is inside the image.
                    let (owLo, owHi) = insideColumns(c, dx, w, wo)
                    for oh in 0..<ho {
                        let ih = oh * c.strideH + dy
                        let r = row + oh * wo
                        if ih < 0 || ih >= h {
                            r.update(repeating: 0, count: wo)
                            continue
                        }
                        let src = plane + ih * w + dx
                        if owLo > 0 { r.update(repeating: 0, count: owLo) }
                        if c.strideW == 1 {
                            (r + owLo).update(from: src + owLo, count: owHi - owLo)
                        } else {
                            var ow = owLo
                            while ow < owHi { r[ow] = src[ow * c.strideW]; ow += 1 }
                        }
                        if owHi < wo { (r + owHi).update(repeating: 0, count: wo - owHi) }
                    }
                    row += ho * wo
                }
            }
        }
    }

    /// One input channel per group: each output channel slides its k×k filter over one plane.
    static func depthwiseImage(_ c: Conv2DConfig, _ x: UnsafePointer<Float>, _ h: Int, _ w: Int,
                               _ weight: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ ho: Int, _ wo: Int) {
        let mult = c.outChannels / c.groups
        for oc in 0..<c.outChannels {
            let plane = x + (oc / mult) * h * w
            let wk = weight + oc * c.kernelH * c.kernelW
            let out = y + oc * ho * wo
            for ki in 0..<c.kernelH {
                let dy = ki * c.dilationH - c.padH
                for kj in 0..<c.kernelW {
                    let dx = kj * c.dilationW - c.padW
                    let wv = wk[ki * c.kernelW + kj]
                    let (owLo, owHi) = insideColumns(c, dx, w, wo)
                    for oh in 0..<ho {
                        let ih = oh * c.strideH + dy
                        if ih < 0 || ih >= h { continue }
                        let src = plane + ih * w + dx
                        let dst = out + oh * wo
                        if c.strideW == 1 {
                            var ow = owLo
                            let wv8 = SIMD8<Float>(repeating: wv)
                            while ow + 8 <= owHi { store8(fmadd(load8(dst + ow), wv8, load8(src + ow)), dst + ow); ow += 8 }
                            while ow < owHi { dst[ow] += wv * src[ow]; ow += 1 }
                        } else {
                            var ow = owLo
                            while ow < owHi { dst[ow] += wv * src[ow * c.strideW]; ow += 1 }
                        }
                    }
                }
            }
        }
    }
}

extension Reference {
    /// Direct seven-loop convolution in Double (the oracle for `Ops.conv2d`).
    public static func conv2d(_ x: Tensor, weight: Tensor, bias: Tensor? = nil, config c: Conv2DConfig) -> Tensor {
        c.checkShapes(x, weight, bias)
        let n = x.shape[0], h = x.shape[2], w = x.shape[3]
        let (ho, wo) = c.outputSize(h: h, w: w)
        let cinG = c.inChannels / c.groups, coutG = c.outChannels / c.groups
        let xs = x.scalars, ws = weight.scalars, bs = bias?.scalars
        return Tensor(shape: [n, c.outChannels, ho, wo]) { y in
            for b in 0..<n {
                for oc in 0..<c.outChannels {
                    let g = oc / coutG
                    for oh in 0..<ho {
                        for ow in 0..<wo {
                            var s = Double(bs?[oc] ?? 0)
                            for ic in 0..<cinG {
                                for ki in 0..<c.kernelH {
                                    let ih = oh * c.strideH - c.padH + ki * c.dilationH
                                    if ih < 0 || ih >= h { continue }
                                    for kj in 0..<c.kernelW {
                                        let iw = ow * c.strideW - c.padW + kj * c.dilationW
                                        if iw < 0 || iw >= w { continue }
                                        let xv = xs[((b * c.inChannels + g * cinG + ic) * h + ih) * w + iw]
                                        let wv = ws[((oc * cinG + ic) * c.kernelH + ki) * c.kernelW + kj]
                                        s += Double(xv) * Double(wv)
                                    }
                                }
                            }
                            y[((b * c.outChannels + oc) * ho + oh) * wo + ow] = Float(s)
                        }
                    }
                }
            }
        }
    }
}
