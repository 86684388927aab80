/// A convolution with weights packed once for the NCHW8c direct kernel
/// `f32-conv-nchw8c-6x16` (DESIGN §2): 6 output pixels × 16 output channels per tile, 12 SIMD8
/// accumulators, reduction over (input block, tap, 8 channels).
///
/// Input channels < 8 (the 3-channel stem) take an im2col route instead: the reduction runs
/// over (channel, ky, kx) packed densely in blocks of 8, so 27 taps cost 32 slots rather than
/// 72 for zero-padded channels.
///
/// Supports groups = 1, any kernel size, stride, padding and dilation. Output channels are
/// processed in pairs of blocks (16); a trailing single block is handled.
public final class BlockedConv2D: @unchecked Sendable {
    public static let kernelName = "f32-conv-nchw8c-6x16"
    public let config: Conv2DConfig
    /// True when the reduction is over im2col rows (input channels < 8).
    public let usesIm2col: Bool
    let pairs: Int
    let reductionBlocks: Int
    let taps: Int
    let packed: UnsafeMutablePointer<Float>
    let bias: UnsafeMutablePointer<Float>
    private var geometry: Geometry?
    private var workspace: UnsafeMutablePointer<Float>?
    private var workspaceCount = 0

    /// weight: [Cout, Cin, kh, kw]; bias: [Cout] or nil.
    public init(weight: Tensor, bias: Tensor?, config c: Conv2DConfig) {
        precondition(c.groups == 1, "BlockedConv2D handles groups = 1 (depthwise has its own kernel)")
        precondition(weight.shape == c.weightShape, "weight must be \(c.weightShape), got \(weight.shape)")
        config = c
        usesIm2col = c.inChannels < 8
        pairs = (c.outChannels + 15) / 16
        taps = usesIm2col ? 1 : c.kernelH * c.kernelW
        let kDim = c.inChannels * c.kernelH * c.kernelW
        reductionBlocks = usesIm2col ? (kDim + 7) / 8 : (c.inChannels + 7) / 8
        let panel = reductionBlocks * taps * 8 * 16
        packed = .allocate(capacity: pairs * panel)
        packed.initialize(repeating: 0, count: pairs * panel)
        self.bias = .allocate(capacity: pairs * 16)
        self.bias.initialize(repeating: 0, count: pairs * 16)
        let kk = c.kernelH * c.kernelW
        weight.withUnsafeBufferPointer { w in
            for oc in 0..<c.outChannels {
                let j = oc / 16, lane = oc % 16
                for ic in 0..<c.inChannels {
                    for t in 0..<kk {
                        let v = w[(oc * c.inChannels + ic) * kk + t]
                        // Reduction index: (block, tap, channel-in-block).
                        let (blk, tap, ch) = usesIm2col
                            ? ((ic * kk + t) / 8, 0, (ic * kk + t) % 8)
                            : (ic / 8, t, ic % 8)
                        packed[j * panel + ((blk * taps + tap) * 8 + ch) * 16 + lane] = v
                    }
                }
            }
        }
        if let b = bias {
            precondition(b.shape == [c.outChannels])
            b.withUnsafeBufferPointer { for i in 0..<c.outChannels { self.bias[i] = $0[i] } }
        }
    }

    /// The bias as packed, [Cout].
    public var biasTensor: Tensor { Tensor(shape: [config.outChannels], scalars: Array(UnsafeBufferPointer(start: bias, count: config.outChannels))) }

    deinit {
        packed.deallocate()
        bias.deallocate()
        workspace?.deallocate()
    }

    /// Blocked shape of the output for an input of h × w, with the given halo.
    public func outputShape(n: Int, h: Int, w: Int, halo: Int) -> BlockedShape {
        let o = config.outputSize(h: h, w: w)
        return BlockedShape(n: n, c: config.outChannels, h: o.h, w: o.w, halo: halo)
    }

    /// out = act(conv(input) + bias [+ residual]) on NCHW8c buffers.
    /// input: [N, Cin, H, W] with halo ≥ padding; output and residual: [N, Cout, Ho, Wo].
    public func run(_ input: BlockedBuffer, into output: BlockedBuffer, residual: BlockedBuffer? = nil,
                    activation: Activation = .identity, threads: Int? = nil) {
        let c = config, si = input.shape, so = output.shape
        precondition(!usesIm2col, "input channels < 8: use run(nchw:into:)")
        precondition(si.c == c.inChannels && si.halo >= c.padH && si.halo >= c.padW,
                     "conv input \(si) needs \(c.inChannels) channels and halo ≥ padding")
        precondition(so == outputShape(n: si.n, h: si.h, w: si.w, halo: so.halo), "conv output \(so) mismatched")
        if let r = residual { precondition(r.shape == so, "residual \(r.shape) must match output \(so)") }
        let g = geometryFor(input: si, output: so)
        var tapOffsets = [Int](repeating: 0, count: taps)
        for ki in 0..<c.kernelH {
            for kj in 0..<c.kernelW { tapOffsets[ki * c.kernelW + kj] = (ki * c.dilationH * si.wp + kj * c.dilationW) * 8 }
        }
        tapOffsets.withUnsafeBufferPointer { tp in
            let args = UncheckedSendable((input.pointer, output.pointer, residual?.pointer, tp.baseAddress!))
            schedule(n: si.n, groups: g.groups, threads: threads ?? Parallel.defaultThreads) { n, jr, gr in
                let (x, y, r, tp) = args.value
                self.tiles(x: x + n * si.imageStride, cbStride: si.blockStride, pixIn: g.pixIn, taps: tp,
                           y: y + n * so.imageStride, r: r.map { $0 + n * so.imageStride }, out: so,
                           pixOut: g.pixOut, pixels: g.pixels, jr: jr, gr: gr, activation: activation)
            }
        }
    }

    /// The same from an NCHW tensor [N, Cin, H, W] (the network input): im2col for Cin < 8,
    /// otherwise packed into a temporary blocked buffer.
    public func run(nchw x: Tensor, into output: BlockedBuffer, residual: BlockedBuffer? = nil,
                    activation: Activation = .identity, threads: Int? = nil) {
        guard usesIm2col else {
            let pad = Swift.max(config.padH, config.padW)
            run(BlockedBuffer(x, halo: pad), into: output, residual: residual, activation: activation, threads: threads)
            return
        }
        let c = config, so = output.shape
        precondition(x.rank == 4 && x.shape[1] == c.inChannels, "conv expects [N, \(c.inChannels), H, W], got \(x.shape)")
        let (n, h, w) = (x.shape[0], x.shape[2], x.shape[3])
        precondition(so == outputShape(n: n, h: h, w: w, halo: so.halo), "conv output \(so) mismatched")
        if let r = residual { precondition(r.shape == so) }
        let pixels = so.h * so.w
        let groups = (pixels + 5) / 6
        let colStride = groups * 6 * 8            // floats per reduction block of one image
        let colCount = reductionBlocks * colStride
        let threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        let workers = Swift.min(threads, n)
        let ws = workspace(workers * colCount)
        var pixIn = [Int](repeating: 0, count: groups * 6)
        for p in 0..<groups * 6 { pixIn[p] = Swift.min(p, pixels - 1) * 8 }
        let g = geometryFor(input: BlockedShape(n: n, c: c.inChannels, h: h, w: w, halo: 0), output: so)
        var zeroTap = 0
        x.withUnsafeBufferPointer { xb in
            pixIn.withUnsafeBufferPointer { pin in
                withUnsafeMutablePointer(to: &zeroTap) { tp in
                    let args = UncheckedSendable((xb.baseAddress!, output.pointer, residual?.pointer, pin.baseAddress!,
                                                  UnsafePointer(tp), ws))
                    let (xp, yp, rp, pinp, tpp, wsp) = args.value
                    let body: (Int, UnsafeMutablePointer<Float>, Range<Int>, Range<Int>) -> Void = { img, col, jr, gr in
                        self.tiles(x: col, cbStride: colStride, pixIn: pinp, taps: tpp, y: yp + img * so.imageStride,
                                   r: rp.map { $0 + img * so.imageStride }, out: so, pixOut: g.pixOut, pixels: pixels,
                                   jr: jr, gr: gr, activation: activation)
                    }
                    if workers > 1 {
                        // Whole images per worker, each with its own im2col buffer.
                        Parallel.forEach(workers, threads: workers) { wkr in
                            let col = wsp + wkr * colCount
                            var img = wkr
                            while img < n {
                                Self.im2col(c, xp + img * c.inChannels * h * w, h, w, so, col, colStride)
                                body(img, col, 0..<self.pairs, 0..<groups)
                                img += workers
                            }
                        }
                    } else {
                        for img in 0..<n {
                            Self.im2col(c, xp + img * c.inChannels * h * w, h, w, so, wsp, colStride)
                            Parallel.forEach(threads, threads: threads) { t in
                                let (jr, gr) = self.split(part: t, of: threads, groups: groups)
                                body(img, wsp, jr, gr)
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: - Scheduling

    /// Calls body(image, pair range, pixel-group range) over a partition of the work.
    private func schedule(n: Int, groups: Int, threads: Int, _ body: (Int, Range<Int>, Range<Int>) -> Void) {
        if n >= threads || threads <= 1 {
            Parallel.forEach(n, threads: threads) { img in body(img, 0..<pairs, 0..<groups) }
        } else {
            Parallel.forEach(n * threads, threads: threads) { t in
                let (jr, gr) = split(part: t % threads, of: threads, groups: groups)
                body(t / threads, jr, gr)
            }
        }
    }

    /// Part `part` of `parts`: split output-channel pairs when there are enough, else pixel groups.
    private func split(part: Int, of parts: Int, groups: Int) -> (Range<Int>, Range<Int>) {
        if pairs >= parts && pairs % parts == 0 || pairs >= 4 * parts {
            let r = Parallel.ranges(pairs, parts: parts)
            return (part < r.count ? r[part] : 0..<0, 0..<groups)
        }
        let r = Parallel.ranges(groups, parts: parts)
        return (0..<pairs, part < r.count ? r[part] : 0..<0)
    }

    private func tiles(x: UnsafePointer<Float>, cbStride: Int, pixIn: UnsafePointer<Int>, taps tp: UnsafePointer<Int>,
                       y: UnsafeMutablePointer<Float>, r: UnsafeMutablePointer<Float>?, out so: BlockedShape,
                       pixOut: UnsafePointer<Int>, pixels: Int, jr: Range<Int>, gr: Range<Int>, activation: Activation) {
        let (lo, hi) = Self.clampBounds(activation)
        let panel = reductionBlocks * taps * 128
        let outBlocks = so.blocks
        for j in jr {
            let two = 2 * j + 1 < outBlocks
            let yj = y + 2 * j * so.blockStride
            let rj = r.map { UnsafePointer($0 + 2 * j * so.blockStride) }
            for g in gr {
                let p0 = g * 6
                Self.conv6x16(x, pixIn + p0, tp, taps, reductionBlocks, cbStride, packed + j * panel,
                              yj, pixOut + p0, so.blockStride, Swift.min(6, pixels - p0), two,
                              bias + 16 * j, rj, lo, hi)
            }
        }
    }

    static func clampBounds(_ a: Activation) -> (Float, Float) {
        switch a {
        case .identity: return (-.infinity, .infinity)
        case .relu: return (0, .infinity)
        case .relu1: return (0, 1)
        case .leakyRelu1: preconditionFailure("leaky ReLU-1 is not fused into blocked convolutions")
        }
    }

    // MARK: - Geometry

    struct Geometry {
        var input: BlockedShape, output: BlockedShape
        var pixels: Int, groups: Int
        var pixIn: UnsafeMutablePointer<Int>, pixOut: UnsafeMutablePointer<Int>
    }

    /// Per-pixel input and output offsets (padded to whole tiles by repeating the last pixel), cached.
    private func geometryFor(input si: BlockedShape, output so: BlockedShape) -> Geometry {
        if let g = geometry, g.input.h == si.h, g.input.w == si.w, g.input.wp == si.wp, g.output.wp == so.wp,
           g.output.h == so.h, g.output.w == so.w {
            return g
        }
        if let g = geometry { g.pixIn.deallocate(); g.pixOut.deallocate() }
        let c = config
        let pixels = so.h * so.w, groups = (pixels + 5) / 6
        let pin = UnsafeMutablePointer<Int>.allocate(capacity: groups * 6)
        let pout = UnsafeMutablePointer<Int>.allocate(capacity: groups * 6)
        for p in 0..<groups * 6 {
            let q = Swift.min(p, pixels - 1)
            let oy = q / so.w, ox = q % so.w
            pin[p] = si.pixelOffset(oy * c.strideH - c.padH, ox * c.strideW - c.padW)
            pout[p] = so.pixelOffset(oy, ox)
        }
        let g = Geometry(input: si, output: so, pixels: pixels, groups: groups, pixIn: pin, pixOut: pout)
        geometry = g
        return g
    }

    private func workspace(_ count: Int) -> UnsafeMutablePointer<Float> {
        if workspaceCount < count {
            workspace?.deallocate()
            workspace = .allocate(capacity: count)
            workspace!.initialize(repeating: 0, count: count)
            workspaceCount = count
        }
        return workspace!
    }

    /// Rows (ci, ky, kx) of the image in blocks of 8: col[(k/8)·colStride + p·8 + k%8].
    static func im2col(_ c: Conv2DConfig, _ x: UnsafePointer<Float>, _ h: Int, _ w: Int, _ so: BlockedShape,
                       _ col: UnsafeMutablePointer<Float>, _ colStride: Int) {
        let kk = c.kernelH * c.kernelW
        for ic in 0..<c.inChannels {
            let plane = x + ic * h * w
            for ki in 0..<c.kernelH {
                for kj in 0..<c.kernelW {
                    let k = ic * kk + ki * c.kernelW + kj
                    let dst = col + (k / 8) * colStride + k % 8
                    var p = 0
                    for oy in 0..<so.h {
                        let iy = oy * c.strideH - c.padH + ki * c.dilationH
                        let inside = iy >= 0 && iy < h
                        for ox in 0..<so.w {
                            let ix = ox * c.strideW - c.padW + kj * c.dilationW
                            dst[p * 8] = inside && ix >= 0 && ix < w ? plane[iy * w + ix] : 0
                            p += 1
                        }
                    }
                }
            }
        }
    }

    // MARK: - Microkernel

    /// 6 pixels × 16 output channels. `x + pixIn[i]` is pixel i's window origin; the reduction
    /// runs over `blocks` blocks (stride `cbStride`) × `nTaps` taps (offsets `taps`) × 8 channels,
    /// reading `w` sequentially (16 floats per step). Epilogue: + bias, + residual, clamp to
    /// [lo, hi], store `nPix` pixels of one or two 8-channel blocks.
    @inline(never)
    static func conv6x16(_ x: UnsafePointer<Float>, _ pixIn: UnsafePointer<Int>, _ taps: UnsafePointer<Int>,
                         _ nTaps: Int, _ blocks: Int, _ cbStride: Int, _ w: UnsafePointer<Float>,
                         _ y: UnsafeMutablePointer<Float>, _ pixOut: UnsafePointer<Int>, _ outBlockStride: Int,
                         _ nPix: Int, _ twoBlocks: Bool, _ bias: UnsafePointer<Float>,
                         _ residual: UnsafePointer<Float>?, _ lo: Float, _ hi: Float) {
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
                for ci in 0..<8 {
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
        let b0 = load8(bias), b1 = load8(bias + 8)
        let lov = SIMD8<Float>(repeating: lo), hiv = SIMD8<Float>(repeating: hi)
        @inline(__always) func store(_ i: Int, _ v0: SIMD8<Float>, _ v1: SIMD8<Float>) {
            guard i < nPix else { return }
            let o = pixOut[i]
            var a = v0 + b0, b = v1 + b1
            if let r = residual {
                a += load8(r + o)
                if twoBlocks { b += load8(r + o + outBlockStride) }
            }
            store8(pointwiseMin(pointwiseMax(a, lov), hiv), y + o)
            if twoBlocks { store8(pointwiseMin(pointwiseMax(b, lov), hiv), y + o + outBlockStride) }
        }
        store(0, c00, c01); store(1, c10, c11); store(2, c20, c21)
        store(3, c30, c31); store(4, c40, c41); store(5, c50, c51)
    }
}

extension BlockedConv2D {
    /// NCHW in, NCHW out: x [N, Cin, H, W] (+ residual [N, Cout, Ho, Wo]) → [N, Cout, Ho, Wo].
    /// Converts layouts at the boundary; models keep activations blocked between layers instead.
    public func callAsFunction(_ x: Tensor, residual: Tensor? = nil, activation: Activation = .identity,
                               threads: Int? = nil) -> Tensor {
        let out = BlockedBuffer(outputShape(n: x.shape[0], h: x.shape[2], w: x.shape[3], halo: 0))
        let res = residual.map { BlockedBuffer($0, halo: 0) }
        run(nchw: x, into: out, residual: res, activation: activation, threads: threads)
        return out.toTensor()
    }
}
