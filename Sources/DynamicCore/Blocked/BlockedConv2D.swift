import DynamicShims
import Foundation

/// A convolution with weights packed once for the NCHW8c direct kernels (DESIGN §2), reducing
/// over (input block, tap, 8 channels):
/// - `f32-conv-nchw8c-6x16` (`KernelWidth.simd8`, AVX2): 6 output pixels × 16 output channels
///   per tile, 12 SIMD8 accumulators;
/// - `f32-conv-nchw8c-8x32` (`.simd16`, AVX-512): 8 pixels × 32 channels, 16 SIMD16
///   accumulators (8 × 16 when a single pair of blocks is left, even and odd input channels
///   in separate accumulators).
/// Both read the same packed weights (16-channel panels per pair of output blocks).
///
/// Input channels < 8 (the 3-channel stem) take an im2col route instead: the reduction runs
/// over exactly Cin·kh·kw values (channel, ky, kx) per pixel, so a 3×3 RGB stem costs 27
/// steps rather than 72 for zero-padded channel blocks.
///
/// 3×3 stride-1 pad-1 convolutions with 16, 32 or 64 input channels and even output sizes take
/// the Winograd F(2×2, 3×3) route at 16 lanes (`WinogradConv.swift`; `allowsWinograd`).
///
/// Supports groups = 1, any kernel size, stride, padding and dilation. Output channels are
/// processed in pairs of blocks (16); a trailing single block is handled.
public final class BlockedConv2D: @unchecked Sendable {
    /// The microkernel that `run` uses for `config` on output rows `outputWidth` wide, under the
    /// current `KernelWidth` (a single pair of output blocks takes the 16-channel variant).
    public static func kernelName(for config: Conv2DConfig, outputWidth: Int, outputHeight: Int? = nil) -> String {
        let one = config.outChannels <= 16
        if KernelWidth.current == .simd8 { return config.inChannels < 8 ? "f32-conv-im2col-6x16" : "f32-conv-nchw8c-6x16" }
        if usesWinograd(config, usesIm2col: config.inChannels < 8, outputHeight: outputHeight ?? outputWidth, outputWidth: outputWidth) {
            return one ? "f32-conv-nchw8c-winograd2x2-12x16" : "f32-conv-nchw8c-winograd2x2-12x32"
        }
        if config.inChannels < 8 { return one ? "f32-conv-im2col-8x16" : "f32-conv-im2col-8x32" }
        if let p = rowTilePixels(config, pairs: (config.outChannels + 15) / 16, outputWidth: outputWidth) {
            return p == 16 ? "f32-conv-nchw8c-row16x16" : "f32-conv-nchw8c-row8x32"
        }
        return one ? "f32-conv-nchw8c-8x16" : "f32-conv-nchw8c-8x32"
    }
    /// Output pixels per tile of a kernel width.
    static func tilePixels(_ width: KernelWidth) -> Int { width == .simd16 ? 8 : 6 }
    /// Pixel tables are padded to this many entries so both widths read whole tiles.
    static let pixelPadding = 24
    public let config: Conv2DConfig
    /// True when the reduction is over im2col rows (input channels < 8).
    public let usesIm2col: Bool
    let pairs: Int
    let reductionBlocks: Int
    let taps: Int
    /// Reduction steps per tap: 8 channels of a block, or all Cin·kh·kw im2col values.
    let lanes: Int
    let packed: UnsafeMutablePointer<Float>
    let bias: UnsafeMutablePointer<Float>
    /// Winograd F(2×2, 3×3) weights U[16][Cin][Cout] where the configuration allows it.
    let winograd: UnsafeMutablePointer<Float>?
    /// Pixel offsets per (input, output) shape; never freed before deinit, so concurrent runs
    /// may share them.
    private var geometries: [GeometryKey: Geometry] = [:]
    private let geometryLock = NSLock()

    /// weight: [Cout, Cin, kh, kw]; bias: [Cout] or nil. `im2col`: take the im2col route
    /// (inputs from NCHW tensors only); nil chooses it for input channels < 8.
    public init(weight: Tensor, bias: Tensor?, config c: Conv2DConfig, im2col: Bool? = nil) {
        precondition(c.groups == 1, "BlockedConv2D handles groups = 1 (depthwise has its own kernel)")
        precondition(weight.shape == c.weightShape, "weight must be \(c.weightShape), got \(weight.shape)")
        config = c
        usesIm2col = im2col ?? (c.inChannels < 8)
        pairs = (c.outChannels + 15) / 16
        taps = usesIm2col ? 1 : c.kernelH * c.kernelW
        let kDim = c.inChannels * c.kernelH * c.kernelW
        reductionBlocks = usesIm2col ? 1 : (c.inChannels + 7) / 8
        lanes = usesIm2col ? kDim : 8
        let panel = reductionBlocks * taps * lanes * 16
        packed = .allocate(capacity: pairs * panel)
        packed.initialize(repeating: 0, count: pairs * panel)
        self.bias = .allocate(capacity: pairs * 16)
        self.bias.initialize(repeating: 0, count: pairs * 16)
        winograd = Self.winogradSupports(c, usesIm2col: usesIm2col) ? .allocate(capacity: 16 * c.inChannels * c.outChannels) : nil
        repack(weight: weight, bias: bias)
    }

    /// Packs new weights (and bias) of the same shape into this convolution, keeping its
    /// buffers and geometry caches: training re-packs every layer once per step.
    /// weight: [Cout, Cin, kh, kw]; bias: [Cout] or nil (zero).
    public func repack(weight: Tensor, bias b: Tensor?) {
        let c = config
        precondition(weight.shape == c.weightShape, "weight must be \(c.weightShape), got \(weight.shape)")
        let kk = c.kernelH * c.kernelW
        let panel = reductionBlocks * taps * lanes * 16
        weight.withUnsafeBufferPointer { w in
            // Reduction index: (block, tap, channel-in-block), or the im2col value ic·kk + t.
            // Training re-packs every layer each step: no per-element index arithmetic.
            let src = w.baseAddress!
            for oc in 0..<c.outChannels {
                let dst = packed + (oc / 16) * panel + oc % 16
                for ic in 0..<c.inChannels {
                    let from = src + (oc * c.inChannels + ic) * kk
                    if usesIm2col {
                        for t in 0..<kk { dst[(ic * kk + t) * 16] = from[t] }
                    } else {
                        let to = dst + ((ic / 8) * taps * 8 + ic % 8) * 16
                        for t in 0..<kk { to[t * 128] = from[t] }
                    }
                }
            }
        }
        if let u = winograd { packWinograd(into: u) }
        if let b {
            precondition(b.shape == [c.outChannels])
            b.withUnsafeBufferPointer { for i in 0..<c.outChannels { self.bias[i] = $0[i] } }
        } else {
            bias.update(repeating: 0, count: pairs * 16)
        }
    }

    /// Packs, for the input gradient of a forward convolution `forward` with weights
    /// w [Cout, Cin, kh, kw], its taps (kys × kxs) transposed — `phaseWeight` packed without the
    /// intermediate tensor (training re-packs every layer each step). This convolution's input
    /// channels are the forward's outputs and vice versa; no bias.
    func repack(transposing w: Tensor, of forward: Conv2DConfig, kys: [Int], kxs: [Int]) {
        let c = config, kk = forward.kernelH * forward.kernelW
        precondition(!usesIm2col && c.inChannels == forward.outChannels && c.outChannels == forward.inChannels
                     && taps == kys.count * kxs.count && w.shape == forward.weightShape, "transposed repack mismatched")
        let panel = reductionBlocks * taps * lanes * 16
        let tapOffsets = kys.flatMap { ky in kxs.map { kx in ky * forward.kernelW + kx } }
        w.withUnsafeBufferPointer { wb in
            let src = wb.baseAddress!
            for co in 0..<forward.outChannels {          // this convolution's input channel
                let row = ((co / 8) * taps * 8 + co % 8) * 16
                for ci in 0..<forward.inChannels {       // its output channel
                    let to = packed + (ci / 16) * panel + ci % 16 + row
                    let from = src + (co * forward.inChannels + ci) * kk
                    for (t, o) in tapOffsets.enumerated() { to[t * 128] = from[o] }
                }
            }
        }
        if let u = winograd { packWinograd(into: u) }
    }

    /// The bias as packed, [Cout].
    public var biasTensor: Tensor { Tensor(shape: [config.outChannels], scalars: Array(UnsafeBufferPointer(start: bias, count: config.outChannels))) }

    deinit {
        packed.deallocate()
        bias.deallocate()
        winograd?.deallocate()
        for g in geometries.values { g.pixIn.deallocate(); g.pixOut.deallocate(); g.taps.deallocate() }
    }

    /// Blocked shape of the output for an input of h × w, with the given halo.
    public func outputShape(n: Int, h: Int, w: Int, halo: Int) -> BlockedShape {
        let o = config.outputSize(h: h, w: w)
        return BlockedShape(n: n, c: config.outChannels, h: o.h, w: o.w, halo: halo)
    }

    /// Where the output pixels of a convolution land: pixel (m, n) of a height × width grid goes
    /// to (m·strideH + offsetY, n·strideW + offsetX) of the output buffer. One phase of a strided
    /// convolution's input gradient writes every stride-th pixel this way.
    public struct OutputPlacement: Hashable, Sendable {
        public var height: Int, width: Int, strideH: Int, strideW: Int, offsetY: Int, offsetX: Int
        public init(height: Int, width: Int, strideH: Int, strideW: Int, offsetY: Int, offsetX: Int) {
            (self.height, self.width, self.strideH, self.strideW, self.offsetY, self.offsetX) =
                (height, width, strideH, strideW, offsetY, offsetX)
        }
    }

    /// out = act(conv(input) + bias [+ residual]) on NCHW8c buffers.
    /// input: [N, Cin, H, W] with halo ≥ padding; output and residual: [N, Cout, Ho, Wo], or with
    /// `placement`, any output the placed pixels fit in (other pixels are left as they are).
    /// `moments`: Σ and Σ² per channel of the stored outputs, gathered in the kernels' epilogues
    /// (the batch statistics of a training-mode batch norm after this convolution, without a
    /// sweep over the output).
    public func run(_ input: BlockedBuffer, into output: BlockedBuffer, placement: OutputPlacement? = nil,
                    residual: BlockedBuffer? = nil, activation: Activation = .identity, threads: Int? = nil,
                    moments: ConvMoments? = nil) {
        let c = config, si = input.shape, so = output.shape
        precondition(!usesIm2col, "input channels < 8: use run(nchw:into:)")
        precondition(si.c == c.inChannels && si.halo >= c.padH && si.halo >= c.padW,
                     "conv input \(si) needs \(c.inChannels) channels and halo ≥ padding")
        if let p = placement {
            precondition(so.n == si.n && so.c == c.outChannels && p.height > 0 && p.width > 0
                         && (p.height - 1) * p.strideH + p.offsetY < so.h && (p.width - 1) * p.strideW + p.offsetX < so.w
                         && (p.height - 1) * c.strideH + (c.kernelH - 1) * c.dilationH - c.padH < si.h + si.halo
                         && (p.width - 1) * c.strideW + (c.kernelW - 1) * c.dilationW - c.padW < si.w + si.halo,
                         "conv placement \(p) does not fit input \(si) / output \(so)")
        } else {
            precondition(so == outputShape(n: si.n, h: si.h, w: si.w, halo: so.halo), "conv output \(so) mismatched")
        }
        if let r = residual { precondition(r.shape == so, "residual \(r.shape) must match output \(so)") }
        if let u = winograd, placement == nil, si.halo >= 1,
           Self.usesWinograd(c, usesIm2col: usesIm2col, outputHeight: so.h, outputWidth: so.w) {
            runWinograd(input, into: output, residual: residual, activation: activation, threads: threads, moments: moments,
                        u: UnsafePointer(u))
            return
        }
        if KernelWidth.current == .simd16, let rowPixels = rowTilePixels(outputWidth: placement?.width ?? so.w) {
            runRows(input, into: output, placement: placement, residual: residual, activation: activation,
                    threads: threads, tile: rowPixels, moments: moments)
            return
        }
        let g = geometryFor(input: si, output: so, placement: placement)
        // Tiles run over the pixels of all images at once (small images still fill whole tiles),
        // in chunks whose input fits in L2; every chunk sweeps all output-channel pairs.
        let threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        let width = KernelWidth.current, tile = Self.tilePixels(width)
        let groups = (g.pixels + tile - 1) / tile
        let bytesPerGroup = reductionBlocks * 8 * 4 * tile * c.strideH * c.strideW
        // With several threads, about eight tasks per thread, so that dynamic claiming evens out a
        // worker that starts late: pixel chunks first, then channel pairs when tiles are few.
        let tasksWanted = threads == 1 ? 1 : 8 * threads
        let chunk = ConvMoments.align(Swift.max(1, Swift.min((256 << 10) / bytesPerGroup, threads == 1 ? Int.max : groups / tasksWanted)),
                                      moments)
        let chunks = (groups + chunk - 1) / chunk
        let stats = moments?.begin(tiles: groups, pairs: pairs, output: so)
        // The wide kernel takes pairs two at a time: split at even pair indices.
        let pairAlign = width == .simd16 ? 2 : 1
        let pairSplit = chunks >= tasksWanted ? 1 : Swift.min((pairs + pairAlign - 1) / pairAlign, (tasksWanted + chunks - 1) / chunks)
        let pairRanges = Parallel.ranges(pairs, parts: pairSplit, align: pairAlign)
        let (x, y, r) = (UnsafePointer(input.pointer), output.pointer, residual?.pointer)
        // Inputs larger than L2 come from L3 or memory: prefetch them (measured: +8 % at batch 64).
        let prefetch = si.count * 4 > (1 << 20)
        Parallel.forEach(chunks * pairRanges.count, threads: threads) { t in
            let ci = t / pairRanges.count
            let gr = (ci * chunk)..<Swift.min(groups, (ci + 1) * chunk)
            self.tiles(width: width, x: x, cbStride: si.blockStride, prefetchRows: prefetch ? c.kernelH : 0,
                       prefetchRowStride: c.dilationH * si.wp * 8, prefetchTail: (c.kernelW - 1) * c.dilationW * 8,
                       pixIn: g.pixIn, taps: g.taps, y: y, r: r, out: so,
                       pixOut: g.pixOut, pixels: g.pixels, jr: pairRanges[t % pairRanges.count], gr: gr,
                       activation: activation, stats: stats)
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
        let width = KernelWidth.current, tile = Self.tilePixels(width)
        let groups = (pixels + tile - 1) / tile
        let padded = (pixels + Self.pixelPadding - 1) / Self.pixelPadding * Self.pixelPadding
        let colCount = padded * lanes        // pixel-major: lanes floats per pixel
        let threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        let workers = Swift.min(threads, n)
        let ws = UnsafeMutablePointer<Float>.allocate(capacity: workers * colCount)
        defer { ws.deallocate() }
        var pixIn = [Int](repeating: 0, count: padded)
        for p in 0..<padded { pixIn[p] = Swift.min(p, pixels - 1) * lanes }
        var one = so
        one.n = 1
        let g = geometryFor(input: BlockedShape(n: 1, c: c.inChannels, h: h, w: w, halo: 0), output: one)
        var zeroTap = 0
        x.withUnsafeBufferPointer { xb in
            pixIn.withUnsafeBufferPointer { pin in
                withUnsafeMutablePointer(to: &zeroTap) { tp in
                    let args = UncheckedSendable((xb.baseAddress!, output.pointer, residual?.pointer, pin.baseAddress!,
                                                  UnsafePointer(tp), ws))
                    let (xp, yp, rp, pinp, tpp, wsp) = args.value
                    let body: (Int, UnsafeMutablePointer<Float>, Range<Int>, Range<Int>) -> Void = { img, col, jr, gr in
                        self.tiles(width: width, x: col, cbStride: 0, pixIn: pinp, taps: tpp, y: yp + img * so.imageStride,
                                   r: rp.map { $0 + img * so.imageStride }, out: so, pixOut: g.pixOut, pixels: pixels,
                                   jr: jr, gr: gr, activation: activation)
                    }
                    if workers > 1 {
                        // Whole images per worker, each with its own im2col buffer.
                        Parallel.forEach(workers, threads: workers) { wkr in
                            let col = wsp + wkr * colCount
                            var img = wkr
                            while img < n {
                                Self.im2col(c, xp + img * c.inChannels * h * w, h, w, so, col)
                                body(img, col, 0..<self.pairs, 0..<groups)
                                img += workers
                            }
                        }
                    } else {
                        for img in 0..<n {
                            Self.im2col(c, xp + img * c.inChannels * h * w, h, w, so, wsp)
                            Parallel.forEach(threads, threads: threads) { t in
                                let (jr, gr) = self.split(part: t, of: threads, groups: groups, pairAlign: width == .simd16 ? 2 : 1)
                                body(img, wsp, jr, gr)
                            }
                        }
                    }
                }
            }
        }
    }

    // MARK: - Row tiles (16-lane row kernels)

    /// Pixels per row tile when the row kernels apply: taps 3 wide at stride 1 and dilation 1 along
    /// x, output rows at least one tile wide. 16 for a single pair of output blocks, else 8.
    func rowTilePixels(outputWidth: Int) -> Int? {
        usesIm2col ? nil : Self.rowTilePixels(config, pairs: pairs, outputWidth: outputWidth)
    }

    static func rowTilePixels(_ c: Conv2DConfig, pairs: Int, outputWidth: Int) -> Int? {
        guard c.kernelW == 3, c.strideW == 1, c.dilationW == 1 else { return nil }
        let p = pairs == 1 ? 16 : 8
        return outputWidth >= p ? p : nil
    }

    /// `run` on row tiles: `tile` consecutive output pixels of one row (a row's last tile is
    /// shifted left to end at the row's end and stores only the pixels the one before left).
    private func runRows(_ input: BlockedBuffer, into output: BlockedBuffer, placement: OutputPlacement?,
                         residual: BlockedBuffer?, activation: Activation, threads: Int?, tile: Int, moments: ConvMoments?) {
        let c = config, si = input.shape, so = output.shape
        let p = placement ?? OutputPlacement(height: so.h, width: so.w, strideH: 1, strideW: 1, offsetY: 0, offsetX: 0)
        let segments = (p.width + tile - 1) / tile
        let tiles = so.n * p.height * segments
        let threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        // About eight tasks per thread (dynamic claiming evens out a late worker); channel pairs are
        // split too when row tiles are few.
        let tasksWanted = threads == 1 ? 1 : 8 * threads
        let chunk = ConvMoments.align(Swift.max(1, threads == 1 ? tiles : tiles / tasksWanted), moments)
        let chunks = (tiles + chunk - 1) / chunk
        let stats = moments?.begin(tiles: tiles, pairs: pairs, output: so)
        let pairSplit = chunks >= tasksWanted ? 1 : Swift.min((pairs + 1) / 2, (tasksWanted + chunks - 1) / chunks)
        let pairRanges = Parallel.ranges(pairs, parts: pairSplit, align: 2)
        let (x, y, r) = (UnsafePointer(input.pointer), output.pointer, residual.map { UnsafePointer($0.pointer) })
        let (lo, hi) = Self.clampBounds(activation)
        let panel = reductionBlocks * taps * lanes * 16
        let rowStride = c.dilationH * si.wp * 8
        let outBlocks = so.blocks
        Parallel.forEach(chunks * pairRanges.count, threads: threads) { t in
            let jr = pairRanges[t % pairRanges.count]
            let ci = t / pairRanges.count
            for tileIndex in (ci * chunk)..<Swift.min(tiles, (ci + 1) * chunk) {
                let n = tileIndex / (p.height * segments), rest = tileIndex % (p.height * segments)
                let oy = rest / segments, segment = rest % segments
                let ox0 = Swift.min(segment * tile, p.width - tile)
                let first = segment * tile - ox0
                let xo = x + n * si.imageStride + si.pixelOffset(oy * c.strideH - c.padH, ox0 - c.padW)
                let out = n * so.imageStride + so.pixelOffset(oy * p.strideH + p.offsetY, ox0 * p.strideW + p.offsetX)
                var j = jr.lowerBound
                while j < jr.upperBound {
                    let off = 2 * j * so.blockStride
                    let (w, yj, rj, bj) = (UnsafePointer(packed + j * panel), y + off, r.map { $0 + off }, UnsafePointer(bias + 16 * j))
                    let sj = stats?.at(tile: tileIndex, pair: j, pairs: self.pairs, offset: off)
                    if let z = sj?.z {
                        // The epilogue reads z (and a ReLU output) at the tile's pixels: fetch them
                        // while the reduction runs, they come from L3 or memory.
                        let blocks = Swift.min(tile == 16 || j + 1 == jr.upperBound ? 2 : 4, outBlocks - 2 * j)
                        Self.prefetchRow(z + out, pixels: tile, step: 8 * p.strideW, blocks: blocks, blockStride: so.blockStride)
                        if let m = sj?.reluOutput {
                            Self.prefetchRow(m + out, pixels: tile, step: 8 * p.strideW, blocks: blocks, blockStride: so.blockStride)
                        }
                    }
                    if tile == 16 {
                        Self.convRow16x16(xo, rowStride, c.kernelH, reductionBlocks, si.blockStride, w, panel, yj, out,
                                          8 * p.strideW, so.blockStride, first, Swift.min(2, outBlocks - 2 * j), bj, rj, lo, hi, sj)
                        j += 1
                    } else if j + 1 < jr.upperBound {
                        Self.convRow8x32(xo, rowStride, c.kernelH, reductionBlocks, si.blockStride, w, panel, yj, out,
                                         8 * p.strideW, so.blockStride, first, Swift.min(4, outBlocks - 2 * j), bj, rj, lo, hi, sj)
                        j += 2
                    } else {
                        Self.convRow8x16(xo, rowStride, c.kernelH, reductionBlocks, si.blockStride, w, panel, yj, out,
                                         8 * p.strideW, so.blockStride, first, Swift.min(2, outBlocks - 2 * j), bj, rj, lo, hi, sj)
                        j += 1
                    }
                }
            }
        }
    }

    /// Prefetches `pixels` pixels `step` floats apart in `blocks` 8-channel blocks from p.
    @inline(__always)
    static func prefetchRow(_ p: UnsafePointer<Float>, pixels: Int, step: Int, blocks: Int, blockStride: Int) {
        for b in 0..<blocks {
            let q = p + b * blockStride
            // 8 floats per pixel: every other pixel starts a 64-byte line when step is 8.
            var i = 0
            while i < pixels { dyn_prefetch(q + i * step); i += step == 8 ? 2 : 1 }
        }
    }

    // MARK: - Scheduling

    /// Part `part` of `parts`: split output-channel pairs when there are enough, else pixel groups.
    private func split(part: Int, of parts: Int, groups: Int, pairAlign: Int) -> (Range<Int>, Range<Int>) {
        let units = (pairs + pairAlign - 1) / pairAlign
        if units >= parts && units % parts == 0 || units >= 4 * parts {
            let r = Parallel.ranges(pairs, parts: parts, align: pairAlign)
            return (part < r.count ? r[part] : 0..<0, 0..<groups)
        }
        let r = Parallel.ranges(groups, parts: parts)
        return (0..<pairs, part < r.count ? r[part] : 0..<0)
    }

    /// Runs pixel tiles `gr` (of `tilePixels(width)` pixels) × channel pairs `jr` on the kernel of `width`.
    private func tiles(width: KernelWidth, x: UnsafePointer<Float>, cbStride: Int, prefetchRows: Int = 0,
                       prefetchRowStride: Int = 0, prefetchTail: Int = 0, pixIn: UnsafePointer<Int>,
                       taps tp: UnsafePointer<Int>, y: UnsafeMutablePointer<Float>, r: UnsafeMutablePointer<Float>?,
                       out so: BlockedShape, pixOut: UnsafePointer<Int>, pixels: Int, jr: Range<Int>, gr: Range<Int>,
                       activation: Activation, stats: EpilogueSums? = nil) {
        let (lo, hi) = Self.clampBounds(activation)
        let panel = reductionBlocks * taps * lanes * 16
        let outBlocks = so.blocks
        let tile = Self.tilePixels(width)
        /// One tile: pixels from p0, pairs j (and j + 1 on the wide kernel when it is in jr).
        @inline(__always)
        func kernel(_ p0: Int, _ j: Int) -> Int {
            let off = 2 * j * so.blockStride
            let nPix = Swift.min(tile, pixels - p0)
            let res = r.map { UnsafePointer($0 + off) }
            let sj = stats?.at(tile: p0 / tile, pair: j, pairs: pairs, offset: off)
            if width == .simd8 {
                Self.conv6x16(x, pixIn + p0, tp, taps, lanes, reductionBlocks, cbStride, packed + j * panel,
                              y + off, pixOut + p0, so.blockStride, nPix, 2 * j + 1 < outBlocks,
                              bias + 16 * j, res, lo, hi, sj)
                return 1
            }
            if j + 1 < jr.upperBound {
                Self.conv8x32(x, pixIn + p0, tp, taps, lanes, reductionBlocks, cbStride, packed + j * panel, panel,
                               y + off, pixOut + p0, so.blockStride, nPix, Swift.min(4, outBlocks - 2 * j),
                               bias + 16 * j, res, lo, hi, sj)
                return 2
            }
            Self.conv8x16(x, pixIn + p0, tp, taps, lanes, reductionBlocks, cbStride, packed + j * panel, panel,
                           y + off, pixOut + p0, so.blockStride, nPix, Swift.min(2, outBlocks - 2 * j),
                           bias + 16 * j, res, lo, hi, sj)
            return 1
        }
        // Few tiles and weights larger than L2 (512-channel layers at batch 1): channel pair outer,
        // so each weight panel comes from memory once and serves every tile while it is in L2.
        if gr.count <= 8 && pairs * panel * 4 > (1 << 20) {
            var j = jr.lowerBound
            while j < jr.upperBound {
                var step = 1
                for g in gr { step = kernel(g * tile, j) }
                j += step
            }
            return
        }
        // Otherwise pixel tile outer, channel pair inner: the tile's input windows stay in L1 while
        // the weight panels stream from L2 (a 64-channel 3×3 panel is 36 KB, more than L1).
        for g in gr {
            let p0 = g * tile
            if prefetchRows > 0, g + 1 < gr.upperBound {
                // Large batches stream their input from L3/DRAM through more streams (blocks ×
                // rows) than the hardware prefetcher follows: fetch the next tile's windows now.
                let q = pixIn + p0 + tile
                for b in 0..<reductionBlocks {
                    let blockBase = x + b * cbStride
                    for r in 0..<prefetchRows {
                        let rowBase = blockBase + r * prefetchRowStride
                        var i = 0
                        while i < tile { dyn_prefetch(rowBase + q[i]); i += 2 }
                        dyn_prefetch(rowBase + q[tile - 1] + prefetchTail)
                    }
                }
            }
            var j = jr.lowerBound
            while j < jr.upperBound { j += kernel(p0, j) }
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
        var pixels: Int
        var pixIn: UnsafeMutablePointer<Int>, pixOut: UnsafeMutablePointer<Int>
        /// Offsets of the kernel taps inside an input block.
        var taps: UnsafeMutablePointer<Int>
    }

    struct GeometryKey: Hashable { var input: BlockedShape, output: BlockedShape, placement: OutputPlacement? }

    /// Offsets of every output pixel of every image (input window origin and output position,
    /// in floats from the buffer start), padded to whole tiles by repeating the last pixel.
    private func geometryFor(input si: BlockedShape, output so: BlockedShape,
                             placement: OutputPlacement? = nil) -> Geometry {
        geometryLock.lock()
        defer { geometryLock.unlock() }
        let key = GeometryKey(input: si, output: so, placement: placement)
        if let g = geometries[key] { return g }
        let c = config
        let p = placement ?? OutputPlacement(height: so.h, width: so.w, strideH: 1, strideW: 1, offsetY: 0, offsetX: 0)
        let perImage = p.height * p.width, pixels = so.n * perImage
        let padded = (pixels + Self.pixelPadding - 1) / Self.pixelPadding * Self.pixelPadding
        let pin = UnsafeMutablePointer<Int>.allocate(capacity: padded)
        let pout = UnsafeMutablePointer<Int>.allocate(capacity: padded)
        for i in 0..<padded {
            let q = Swift.min(i, pixels - 1)
            let n = q / perImage, oy = (q % perImage) / p.width, ox = q % p.width
            pin[i] = n * si.imageStride + si.pixelOffset(oy * c.strideH - c.padH, ox * c.strideW - c.padW)
            pout[i] = n * so.imageStride + so.pixelOffset(oy * p.strideH + p.offsetY, ox * p.strideW + p.offsetX)
        }
        let kk = c.kernelH * c.kernelW
        let taps = UnsafeMutablePointer<Int>.allocate(capacity: kk)
        for ki in 0..<c.kernelH {
            for kj in 0..<c.kernelW { taps[ki * c.kernelW + kj] = (ki * c.dilationH * si.wp + kj * c.dilationW) * 8 }
        }
        let g = Geometry(input: si, output: so, pixels: pixels, pixIn: pin, pixOut: pout, taps: taps)
        geometries[key] = g
        return g
    }

    /// Pixel-major im2col: col[p·K + (ci·kh + ky)·kw + kx], K = Cin·kh·kw, zero outside the image.
    /// Each input row is first copied into a zero-bordered line so the inner loop has no bounds checks.
    static func im2col(_ c: Conv2DConfig, _ x: UnsafePointer<Float>, _ h: Int, _ w: Int, _ so: BlockedShape,
                       _ col: UnsafeMutablePointer<Float>) {
        let kk = c.kernelH * c.kernelW, kDim = c.inChannels * kk
        let lineCount = (so.w - 1) * c.strideW + (c.kernelW - 1) * c.dilationW + 1
        let line = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(lineCount, w + c.padW))
        defer { line.deallocate() }
        line.initialize(repeating: 0, count: Swift.max(lineCount, w + c.padW))
        let copyCount = Swift.max(0, Swift.min(w, lineCount - c.padW))
        for oy in 0..<so.h {
            let rowCol = col + oy * so.w * kDim
            for ic in 0..<c.inChannels {
                for ki in 0..<c.kernelH {
                    let iy = oy * c.strideH - c.padH + ki * c.dilationH
                    let base = rowCol + ic * kk + ki * c.kernelW
                    if iy < 0 || iy >= h {
                        for ox in 0..<so.w { for kj in 0..<c.kernelW { base[ox * kDim + kj] = 0 } }
                        continue
                    }
                    (line + c.padW).update(from: x + (ic * h + iy) * w, count: copyCount)
                    if c.kernelW == 3 && c.dilationW == 1 {
                        // The common stem: three neighbours, no inner loop.
                        let s = c.strideW
                        for ox in 0..<so.w {
                            let src = line + ox * s, d = base + ox * kDim
                            d[0] = src[0]; d[1] = src[1]; d[2] = src[2]
                        }
                    } else {
                        for ox in 0..<so.w {
                            let src = line + ox * c.strideW, d = base + ox * kDim
                            for kj in 0..<c.kernelW { d[kj] = src[kj * c.dilationW] }
                        }
                    }
                }
            }
        }
    }

    // MARK: - Microkernel

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

    /// `Epilogue16` for the row kernels: pixel i lands at `out + i·outStep`.
    struct RowEpilogue16 {
        var e: Epilogue16
        let out: Int, outStep: Int

        @inline(__always)
        init(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, out: Int,
             outStep: Int, blockStride: Int, blocks: Int, lo: Float, hi: Float, stats: EpilogueSums?) {
            e = Epilogue16(bias: bias, residual: residual, y: y, pixOut: nil, blockStride: blockStride, blocks: blocks,
                           lo: lo, hi: hi, stats: stats)
            (self.out, self.outStep) = (out, outStep)
        }

        @_transparent
        mutating func store(_ i: Int, _ v: SIMD16<Float>) { e.store(at: out + i * outStep, v) }

        @_transparent
        func finish() { e.finish() }
    }

    /// Bias, residual, clamp and store of one pixel's 16 channels held in one 16-lane vector:
    /// the low half goes to the first 8-channel block, the high half `blockStride` floats on.
    /// With `stats`, the sums of `ConvMoments` are kept and added to its slot by `finish()`.
    struct Epilogue16 {
        let b: SIMD16<Float>, lo: SIMD16<Float>, hi: SIMD16<Float>
        let residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, pixOut: UnsafePointer<Int>?
        let blockStride: Int, blocks: Int
        let stats: EpilogueSums?
        /// Recomputed ReLU mask: z·maskScale + maskShift > 0.
        let maskScale: SIMD16<Float>, maskShift: SIMD16<Float>
        var sum = SIMD16<Float>(), squares = SIMD16<Float>()

        /// `blocks`: how many of the two 8-channel blocks exist (≤ 0: none, nothing is stored).
        @inline(__always)
        init(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
             pixOut: UnsafePointer<Int>?, blockStride: Int, blocks: Int, lo: Float, hi: Float,
             stats: EpilogueSums?) {
            b = blocks > 0 ? load16(bias) : SIMD16()
            self.lo = SIMD16(repeating: lo); self.hi = SIMD16(repeating: hi)
            (self.residual, self.y, self.pixOut, self.blockStride, self.blocks) = (residual, y, pixOut, blockStride, blocks)
            self.stats = blocks > 0 ? stats : nil
            maskScale = stats?.maskScale.map { load16($0) } ?? SIMD16()
            maskShift = stats?.maskShift.map { load16($0) } ?? SIMD16()
        }

        /// Pixel i of the pixel table.
        @_transparent
        mutating func store(_ i: Int, _ v: SIMD16<Float>) { store(at: pixOut.unsafelyUnwrapped[i], v) }

        /// The one or two 8-channel blocks at offset o of p.
        @_transparent
        func load(_ p: UnsafePointer<Float>, _ o: Int) -> SIMD16<Float> {
            blocks > 1 ? load8x2(p + o, blockStride) : SIMD16(lowHalf: load8(p + o), highHalf: SIMD8())
        }

        /// The pixel at offset o.
        @_transparent
        mutating func store(at o: Int, _ v: SIMD16<Float>) {
            if blocks <= 0 { return }
            var a = v + b
            if let r = residual { a += load(r, o) }
            a = vmin(vmax(a, lo), hi)
            if let stats {
                if let z = stats.z {
                    let zv = load(z, o)
                    if let m = stats.reluOutput {
                        a = a.replacing(with: 0, where: load(m, o) .<= 0)
                    } else if stats.maskScale != nil {
                        a = a.replacing(with: 0, where: fmadd(maskShift, zv, maskScale) .<= 0)
                    }
                    sum += a
                    squares = fmadd(squares, a, zv)
                } else {
                    sum += a
                    squares = fmadd(squares, a, a)
                }
            }
            store8(a.lowHalf, y + o)
            if blocks > 1 { store8(a.highHalf, y + o + blockStride) }
        }

        @_transparent
        func finish() {
            guard let slot = stats?.slot else { return }
            store16(load16(slot) + sum, slot)
            store16(load16(slot + 16) + squares, slot + 16)
        }
    }

    /// Bias, residual, clamp and store of one pixel's 16 accumulated channels; with `stats`, the
    /// sums of `ConvMoments` as in `Epilogue16`. Kept apart from `Epilogue16` on purpose: the
    /// 8-lane kernel built on the 16-lane epilogue measured 2–8 % slower (batch 16, one thread).
    struct Epilogue {
        let b0: SIMD8<Float>, b1: SIMD8<Float>, lo: SIMD8<Float>, hi: SIMD8<Float>
        let residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, pixOut: UnsafePointer<Int>
        let blockStride: Int, twoBlocks: Bool
        let stats: EpilogueSums?
        let scale0: SIMD8<Float>, scale1: SIMD8<Float>, shift0: SIMD8<Float>, shift1: SIMD8<Float>
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), q0 = SIMD8<Float>(), q1 = SIMD8<Float>()

        @inline(__always)
        init(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
             pixOut: UnsafePointer<Int>, blockStride: Int, twoBlocks: Bool, lo: Float, hi: Float,
             stats: EpilogueSums?) {
            b0 = load8(bias); b1 = load8(bias + 8)
            self.lo = SIMD8(repeating: lo); self.hi = SIMD8(repeating: hi)
            (self.residual, self.y, self.pixOut, self.blockStride, self.twoBlocks) = (residual, y, pixOut, blockStride, twoBlocks)
            self.stats = stats
            scale0 = stats?.maskScale.map { load8($0) } ?? SIMD8(); scale1 = stats?.maskScale.map { load8($0 + 8) } ?? SIMD8()
            shift0 = stats?.maskShift.map { load8($0) } ?? SIMD8(); shift1 = stats?.maskShift.map { load8($0 + 8) } ?? SIMD8()
        }

        @_transparent
        mutating func store(_ i: Int, _ v0: SIMD8<Float>, _ v1: SIMD8<Float>) {
            let o = pixOut[i]
            var a = v0 + b0, b = v1 + b1
            if let r = residual {
                a += load8(r + o)
                if twoBlocks { b += load8(r + o + blockStride) }
            }
            a = vmin(vmax(a, lo), hi)
            b = vmin(vmax(b, lo), hi)
            if let stats {
                if let z = stats.z {
                    let z0 = load8(z + o), z1 = twoBlocks ? load8(z + o + blockStride) : SIMD8()
                    if let m = stats.reluOutput {
                        a = a.replacing(with: 0, where: load8(m + o) .<= 0)
                        if twoBlocks { b = b.replacing(with: 0, where: load8(m + o + blockStride) .<= 0) }
                    } else if stats.maskScale != nil {
                        a = a.replacing(with: 0, where: fmadd(shift0, z0, scale0) .<= 0)
                        b = b.replacing(with: 0, where: fmadd(shift1, z1, scale1) .<= 0)
                    }
                    s0 += a; q0 = fmadd(q0, a, z0)
                    s1 += b; q1 = fmadd(q1, b, z1)
                } else {
                    s0 += a; q0 = fmadd(q0, a, a)
                    s1 += b; q1 = fmadd(q1, b, b)
                }
            }
            store8(a, y + o)
            if twoBlocks { store8(b, y + o + blockStride) }
        }

        @_transparent
        func finish() {
            guard let slot = stats?.slot else { return }
            store16(load16(slot) + SIMD16(lowHalf: s0, highHalf: s1), slot)
            store16(load16(slot + 16) + SIMD16(lowHalf: q0, highHalf: q1), slot + 16)
        }
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
