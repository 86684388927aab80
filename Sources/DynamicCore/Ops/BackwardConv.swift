// Backward passes of 2-D convolution. With y = conv(x; W) per image and group g,
// written as Y_g[Cout_g × P] = W_g[Cout_g × K] · col(x_g)[K × P] (K = Cin_g·kh·kw, P = Ho·Wo):
//   dcol = W_gᵀ · dY_g, then dx_g = col2im(dcol)          (input gradient)
//   dW_g += dY_g · col(x_g)ᵀ, summed over images           (weight gradient)
// Both products run on `Gemm.sgemm`, the transposes expressed through its stride arguments.
// Depthwise convolutions (one input channel per group) use direct loops instead.

extension Conv2DConfig {
    func checkBackwardShapes(gradOutput dy: Tensor, inputHeight h: Int, inputWidth w: Int) {
        let o = outputSize(h: h, w: w)
        precondition(dy.rank == 4 && dy.shape[1] == outChannels && dy.shape[2] == o.h && dy.shape[3] == o.w,
                     "conv2d gradOutput must be [N, \(outChannels), \(o.h), \(o.w)] for a \(h)×\(w) input, got \(dy.shape)")
    }

    var isDepthwise: Bool { inChannels == groups && groups > 1 }
    /// 1×1, stride 1, no padding: the image itself is the im2col matrix.
    var isPointwiseDirect: Bool {
        kernelH == 1 && kernelW == 1 && strideH == 1 && strideW == 1 && padH == 0 && padW == 0
    }
}

extension Ops {
    /// Input gradient of `conv2d`. gradOutput: [N, Cout, Ho, Wo], weight: [Cout, Cin/groups, kh, kw]
    /// → [N, Cin, inputHeight, inputWidth]. Input pixels no window reads get zero.
    /// Threads split images when N ≥ 2, else GEMM columns; results never depend on the thread count.
    public static func conv2dBackwardInput(_ gradOutput: Tensor, weight: Tensor, config c: Conv2DConfig,
                                           inputHeight h: Int, inputWidth w: Int, threads: Int? = nil) -> Tensor {
        c.checkBackwardShapes(gradOutput: gradOutput, inputHeight: h, inputWidth: w)
        precondition(weight.shape == c.weightShape, "conv2d weight must be \(c.weightShape), got \(weight.shape)")
        if c.groups == 1, c.padH <= (c.kernelH - 1) * c.dilationH, c.padW <= (c.kernelW - 1) * c.dilationW,
           BlockedConvInputGradient.supports(c) {
            // A convolution of dY with the flipped, transposed weights (per phase for strides > 1),
            // which the NCHW8c kernel runs directly.
            let halo = Swift.max(c.kernelH * c.dilationH, c.kernelW * c.dilationW)
            let dx = BlockedBuffer(BlockedShape(n: gradOutput.shape[0], c: c.inChannels, h: h, w: w, halo: 0))
            BlockedConvInputGradient(weight: weight, config: c).run(BlockedBuffer(gradOutput, halo: halo), into: dx,
                                                                    threads: threads)
            return dx.toTensor()
        }
        let n = gradOutput.shape[0], ho = gradOutput.shape[2], wo = gradOutput.shape[3]
        let threads = threads ?? Parallel.defaultThreads
        let cinG = c.inChannels / c.groups, coutG = c.outChannels / c.groups
        let kdim = cinG * c.kernelH * c.kernelW, p = ho * wo
        let inPlane = c.inChannels * h * w, outPlane = c.outChannels * p
        var dx = Tensor(zeros: [n, c.inChannels, h, w])
        gradOutput.withUnsafeBufferPointer { gb in
            weight.withUnsafeBufferPointer { wb in
                dx.withUnsafeMutableBufferPointer { xb in
                    let ptrs = UncheckedSendable((gb.baseAddress!, wb.baseAddress!, xb.baseAddress!))
                    let imageWorkers = Swift.min(threads, n)
                    let gemmThreads = imageWorkers > 1 ? 1 : threads
                    Parallel.forEach(imageWorkers, threads: imageWorkers) { worker in
                        let (gp, wp, xp) = ptrs.value
                        let col: UnsafeMutablePointer<Float>? = (c.isDepthwise || c.isPointwiseDirect) ? nil
                            : .allocate(capacity: kdim * p)
                        defer { col?.deallocate() }
                        var img = worker
                        while img < n {
                            let gi = gp + img * outPlane, xi = xp + img * inPlane
                            if c.isDepthwise {
                                depthwiseBackwardInputImage(c, gi, ho, wo, wp, xi, h, w)
                            } else {
                                for g in 0..<c.groups {
                                    let xg = xi + g * cinG * h * w
                                    // dcol[K × P] = W_gᵀ · dY_g; W_gᵀ through strides (1, K).
                                    Gemm.sgemm(m: kdim, n: p, k: coutG,
                                               a: wp + g * coutG * kdim, aRowStride: 1, aColStride: kdim,
                                               b: gi + g * coutG * p, bRowStride: p, bColStride: 1,
                                               c: col ?? xg, ldc: p, threads: gemmThreads)
                                    if let col { col2im(c, col, ho, wo, xg, cinG, h, w) }
                                }
                            }
                            img += imageWorkers
                        }
                    }
                }
            }
        }
        return dx
    }

    /// dX = conv(dY; W′) with W′[ci, co, i, j] = W[co, ci, kh−1−i, kw−1−j], stride 1, padding
    /// (k−1)·d − p: the transpose of a stride-1 convolution is a stride-1 convolution.
    /// Weight gradient of `conv2d`: Σ over images of dY · col(x)ᵀ. input: [N, Cin, H, W],
    /// gradOutput: [N, Cout, Ho, Wo] → [Cout, Cin/groups, kh, kw].
    /// Images are summed in a fixed number of contiguous chunks (set by N only) that threads
    /// share out, then the chunk sums are added in order, so the result never depends on threads.
    public static func conv2dBackwardWeight(_ gradOutput: Tensor, input x: Tensor, config c: Conv2DConfig,
                                            threads: Int? = nil) -> Tensor {
        precondition(x.rank == 4 && x.shape[1] == c.inChannels, "conv2d expects [N, \(c.inChannels), H, W], got \(x.shape)")
        let n = x.shape[0], h = x.shape[2], w = x.shape[3]
        c.checkBackwardShapes(gradOutput: gradOutput, inputHeight: h, inputWidth: w)
        precondition(gradOutput.shape[0] == n, "conv2d gradOutput batch \(gradOutput.shape[0]) ≠ input batch \(n)")
        if c.isDepthwise { return depthwiseBackwardWeight(gradOutput, x, c, threads: threads ?? Parallel.defaultThreads) }
        if c.groups == 1 {
            // Dense convolutions: the NCHW8c weight-gradient kernel reads windows in place (no
            // im2col, no transposes); layouts are converted once at the boundary.
            return BlockedConvWeightGradient.compute(input: BlockedBuffer(x, halo: Swift.max(c.padH, c.padW)),
                                                     gradOutput: BlockedBuffer(gradOutput, halo: 0), config: c,
                                                     threads: threads)
        }
        let threads = threads ?? Parallel.defaultThreads
        let ho = gradOutput.shape[2], wo = gradOutput.shape[3]
        let cinG = c.inChannels / c.groups, coutG = c.outChannels / c.groups
        let kdim = cinG * c.kernelH * c.kernelW, p = ho * wo
        let inPlane = c.inChannels * h * w, outPlane = c.outChannels * p
        let wcount = c.outChannels * kdim
        let chunks = Parallel.ranges(n, parts: 4)
        // One partial sum per chunk, side by side, each group's block stored transposed
        // ([K × Cout_g]): dW_gᵀ = col · dY_gᵀ keeps both GEMM operands contiguous to pack
        // (the direct dY_g · colᵀ gathers 16 columns P floats apart and ran 2–3× slower).
        var partial = Tensor(zeros: [chunks.count, wcount])
        x.withUnsafeBufferPointer { xb in
            gradOutput.withUnsafeBufferPointer { gb in
                partial.withUnsafeMutableBufferPointer { pb in
                    let ptrs = UncheckedSendable((xb.baseAddress!, gb.baseAddress!, pb.baseAddress!))
                    Parallel.forEach(chunks.count, threads: Swift.min(threads, chunks.count)) { chunk in
                        let (xp, gp, pp) = ptrs.value
                        let dwT = pp + chunk * wcount
                        let col: UnsafeMutablePointer<Float>? = c.isPointwiseDirect ? nil : .allocate(capacity: kdim * p)
                        let dyT = UnsafeMutablePointer<Float>.allocate(capacity: p * coutG)
                        defer { col?.deallocate(); dyT.deallocate() }
                        for (i, img) in chunks[chunk].enumerated() {
                            for g in 0..<c.groups {
                                let xg = xp + img * inPlane + g * cinG * h * w
                                if let col { im2col(c, xg, cinG, h, w, col, ho, wo) }
                                transpose(gp + img * outPlane + g * coutG * p, rows: coutG, cols: p, into: dyT)
                                Gemm.sgemm(m: kdim, n: coutG, k: p,
                                           a: col.map { UnsafePointer($0) } ?? xg, aRowStride: p, aColStride: 1,
                                           b: dyT, bRowStride: coutG, bColStride: 1,
                                           c: dwT + g * coutG * kdim, ldc: coutG, accumulate: i > 0)
                            }
                        }
                    }
                }
            }
        }
        return partial.withUnsafeBufferPointer { pb in
            Tensor(shape: c.weightShape) { out in
                let o = out.baseAddress!
                for chunk in 0..<chunks.count {
                    for g in 0..<c.groups {
                        let src = pb.baseAddress! + chunk * wcount + g * coutG * kdim, dst = o + g * coutG * kdim
                        for kd in 0..<kdim { for oc in 0..<coutG { dst[oc * kdim + kd] += src[kd * coutG + oc] } }
                    }
                }
            }
        }
    }

    /// dst[j × rows + i] = src[i × cols + j]: a [rows × cols] matrix transposed.
    static func transpose(_ src: UnsafePointer<Float>, rows: Int, cols: Int, into dst: UnsafeMutablePointer<Float>) {
        for i in 0..<rows {
            let s = src + i * cols
            for j in 0..<cols { dst[j * rows + i] = s[j] }
        }
    }

    /// Bias gradient of `conv2d` or `linear`: gradOutput summed over every axis but axis 1.
    /// [N, C, …] → [C].
    public static func biasGradient(_ gradOutput: Tensor) -> Tensor {
        precondition(gradOutput.rank >= 2, "bias gradient expects [N, C, …], got \(gradOutput.shape)")
        let n = gradOutput.shape[0], ch = gradOutput.shape[1], plane = gradOutput.count / Swift.max(n * ch, 1)
        return gradOutput.withUnsafeBufferPointer { gb in
            Tensor(shape: [ch]) { out in
                for img in 0..<n {
                    for k in 0..<ch { out[k] += sum(gb.baseAddress! + (img * ch + k) * plane, plane) }
                }
            }
        }
    }

    /// Scatter-adds the rows (ci, ki, kj) × columns (oh, ow) of `col` back onto a zeroed image:
    /// the adjoint of `im2col`.
    static func col2im(_ c: Conv2DConfig, _ col: UnsafePointer<Float>, _ ho: Int, _ wo: Int,
                       _ x: UnsafeMutablePointer<Float>, _ cin: Int, _ h: Int, _ w: Int) {
        var row = col
        for ci in 0..<cin {
            let plane = x + ci * h * w
            for ki in 0..<c.kernelH {
                for kj in 0..<c.kernelW {
                    let dy = ki * c.dilationH - c.padH, dx = kj * c.dilationW - c.padW
                    let (owLo, owHi) = insideColumns(c, dx, w, wo)
                    for oh in 0..<ho {
                        let ih = oh * c.strideH + dy
                        if ih < 0 || ih >= h { continue }
                        let dst = plane + ih * w + dx, r = row + oh * wo
                        if c.strideW == 1 {
                            addInPlace(dst + owLo, r + owLo, owHi - owLo)
                        } else {
                            var ow = owLo
                            while ow < owHi { dst[ow * c.strideW] += r[ow]; ow += 1 }
                        }
                    }
                    row += ho * wo
                }
            }
        }
    }

    /// Depthwise input gradient of one image: each output channel's gradient slides its filter
    /// back over the input plane it read.
    static func depthwiseBackwardInputImage(_ c: Conv2DConfig, _ gy: UnsafePointer<Float>, _ ho: Int, _ wo: Int,
                                            _ weight: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
                                            _ h: Int, _ w: Int) {
        let mult = c.outChannels / c.groups
        for oc in 0..<c.outChannels {
            let plane = dx + (oc / mult) * h * w
            let wk = weight + oc * c.kernelH * c.kernelW
            let g = gy + oc * ho * wo
            for ki in 0..<c.kernelH {
                let dy = ki * c.dilationH - c.padH
                for kj in 0..<c.kernelW {
                    let dxo = kj * c.dilationW - c.padW
                    let wv = wk[ki * c.kernelW + kj]
                    let (owLo, owHi) = insideColumns(c, dxo, w, wo)
                    for oh in 0..<ho {
                        let ih = oh * c.strideH + dy
                        if ih < 0 || ih >= h { continue }
                        let dst = plane + ih * w + dxo, src = g + oh * wo
                        if c.strideW == 1 {
                            axpy(wv, src + owLo, dst + owLo, owHi - owLo)
                        } else {
                            var ow = owLo
                            while ow < owHi { dst[ow * c.strideW] += wv * src[ow]; ow += 1 }
                        }
                    }
                }
            }
        }
    }

    /// Depthwise weight gradient: dW[oc, 0, ki, kj] = Σ_n Σ_(oh, ow) dY · x at the tap's position.
    /// Threads split output channels (each element summed by one thread in a fixed order).
    static func depthwiseBackwardWeight(_ gradOutput: Tensor, _ x: Tensor, _ c: Conv2DConfig, threads: Int) -> Tensor {
        let n = x.shape[0], h = x.shape[2], w = x.shape[3], ho = gradOutput.shape[2], wo = gradOutput.shape[3]
        let mult = c.outChannels / c.groups, taps = c.kernelH * c.kernelW
        var dw = Tensor(zeros: c.weightShape)
        x.withUnsafeBufferPointer { xb in
            gradOutput.withUnsafeBufferPointer { gb in
                dw.withUnsafeMutableBufferPointer { db in
                    let ptrs = UncheckedSendable((xb.baseAddress!, gb.baseAddress!, db.baseAddress!))
                    Parallel.forEach(c.outChannels, threads: threads) { oc in
                        let (xp, gp, dp) = ptrs.value
                        for ki in 0..<c.kernelH {
                            let dy = ki * c.dilationH - c.padH
                            for kj in 0..<c.kernelW {
                                let dxo = kj * c.dilationW - c.padW
                                let (owLo, owHi) = insideColumns(c, dxo, w, wo)
                                var acc: Float = 0
                                for img in 0..<n {
                                    let plane = xp + (img * c.inChannels + oc / mult) * h * w
                                    let g = gp + (img * c.outChannels + oc) * ho * wo
                                    for oh in 0..<ho {
                                        let ih = oh * c.strideH + dy
                                        if ih < 0 || ih >= h { continue }
                                        let src = plane + ih * w + dxo, gr = g + oh * wo
                                        if c.strideW == 1 {
                                            acc += dot(gr + owLo, src + owLo, owHi - owLo)
                                        } else {
                                            var ow = owLo
                                            while ow < owHi { acc += gr[ow] * src[ow * c.strideW]; ow += 1 }
                                        }
                                    }
                                }
                                dp[oc * taps + ki * c.kernelW + kj] = acc
                            }
                        }
                    }
                }
            }
        }
        return dw
    }
}

// MARK: - Small SIMD helpers shared by the backward kernels

extension Ops {
    /// d[i] += s[i] for i in 0..<count.
    @inline(__always)
    static func addInPlace(_ d: UnsafeMutablePointer<Float>, _ s: UnsafePointer<Float>, _ count: Int) {
        var i = 0
        while i + 8 <= count { store8(load8(d + i) + load8(s + i), d + i); i += 8 }
        while i < count { d[i] += s[i]; i += 1 }
    }

    /// y[i] += a·x[i] for i in 0..<count.
    @inline(__always)
    static func axpy(_ a: Float, _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, _ count: Int) {
        let av = SIMD8<Float>(repeating: a)
        var i = 0
        while i + 8 <= count { store8(fmadd(load8(y + i), av, load8(x + i)), y + i); i += 8 }
        while i < count { y[i] += a * x[i]; i += 1 }
    }

    /// Σ a[i]·b[i] over i in 0..<count (eight partial sums, then a horizontal add).
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count { acc = fmadd(acc, load8(a + i), load8(b + i)); i += 8 }
        var s = acc.sum()
        while i < count { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Σ a[i] over i in 0..<count.
    @inline(__always)
    static func sum(_ a: UnsafePointer<Float>, _ count: Int) -> Float {
        var acc = SIMD8<Float>()
        var i = 0
        while i + 8 <= count { acc += load8(a + i); i += 8 }
        var s = acc.sum()
        while i < count { s += a[i]; i += 1 }
        return s
    }
}

// MARK: - Reference twins

extension Reference {
    /// Input gradient of `conv2d` by direct scatter in Double (oracle for `Ops.conv2dBackwardInput`).
    public static func conv2dBackwardInput(_ gradOutput: Tensor, weight: Tensor, config c: Conv2DConfig,
                                           inputHeight h: Int, inputWidth w: Int) -> Tensor {
        c.checkBackwardShapes(gradOutput: gradOutput, inputHeight: h, inputWidth: w)
        let n = gradOutput.shape[0], ho = gradOutput.shape[2], wo = gradOutput.shape[3]
        let cinG = c.inChannels / c.groups, coutG = c.outChannels / c.groups
        let gs = gradOutput.scalars, ws = weight.scalars
        var acc = [Double](repeating: 0, count: n * c.inChannels * h * w)
        forEachTap(c, n: n, h: h, w: w, ho: ho, wo: wo) { b, oc, oh, ow, ic, ih, iw, ki, kj in
            let g = oc / coutG
            let gv = Double(gs[((b * c.outChannels + oc) * ho + oh) * wo + ow])
            let wv = Double(ws[((oc * cinG + ic) * c.kernelH + ki) * c.kernelW + kj])
            acc[((b * c.inChannels + g * cinG + ic) * h + ih) * w + iw] += gv * wv
        }
        return Tensor(shape: [n, c.inChannels, h, w], scalars: acc.map(Float.init))
    }

    /// Weight gradient of `conv2d` by direct summation in Double (oracle for `Ops.conv2dBackwardWeight`).
    public static func conv2dBackwardWeight(_ gradOutput: Tensor, input x: Tensor, config c: Conv2DConfig) -> Tensor {
        let n = x.shape[0], h = x.shape[2], w = x.shape[3]
        c.checkBackwardShapes(gradOutput: gradOutput, inputHeight: h, inputWidth: w)
        let ho = gradOutput.shape[2], wo = gradOutput.shape[3]
        let cinG = c.inChannels / c.groups, coutG = c.outChannels / c.groups
        let gs = gradOutput.scalars, xs = x.scalars
        var acc = [Double](repeating: 0, count: Tensor.count(of: c.weightShape))
        forEachTap(c, n: n, h: h, w: w, ho: ho, wo: wo) { b, oc, oh, ow, ic, ih, iw, ki, kj in
            let g = oc / coutG
            let gv = Double(gs[((b * c.outChannels + oc) * ho + oh) * wo + ow])
            let xv = Double(xs[((b * c.inChannels + g * cinG + ic) * h + ih) * w + iw])
            acc[((oc * cinG + ic) * c.kernelH + ki) * c.kernelW + kj] += gv * xv
        }
        return Tensor(shape: c.weightShape, scalars: acc.map(Float.init))
    }

    /// Sum over every axis but axis 1, in Double (oracle for `Ops.biasGradient`).
    public static func biasGradient(_ gradOutput: Tensor) -> Tensor {
        let n = gradOutput.shape[0], ch = gradOutput.shape[1], plane = gradOutput.count / Swift.max(n * ch, 1)
        let gs = gradOutput.scalars
        var acc = [Double](repeating: 0, count: ch)
        for i in 0..<gs.count { acc[(i / plane) % ch] += Double(gs[i]) }
        return Tensor(shape: [ch], scalars: acc.map(Float.init))
    }

    /// Calls `body(b, oc, oh, ow, ic, ih, iw, ki, kj)` for every in-image tap of every output
    /// element; `ic` is the channel index within the group.
    static func forEachTap(_ c: Conv2DConfig, n: Int, h: Int, w: Int, ho: Int, wo: Int,
                           _ body: (Int, Int, Int, Int, Int, Int, Int, Int, Int) -> Void) {
        let cinG = c.inChannels / c.groups
        for b in 0..<n { for oc in 0..<c.outChannels { for oh in 0..<ho { for ow in 0..<wo {
            for ic in 0..<cinG { for ki in 0..<c.kernelH { for kj in 0..<c.kernelW {
                let ih = oh * c.strideH - c.padH + ki * c.dilationH
                let iw = ow * c.strideW - c.padW + kj * c.dilationW
                if ih >= 0 && ih < h && iw >= 0 && iw < w { body(b, oc, oh, ow, ic, ih, iw, ki, kj) }
            } } }
        } } } }
    }
}
