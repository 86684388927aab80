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
/// the Winograd F(2×2, 3×3) route at 16 lanes (`WinogradConv.swift`; `KernelOptions.winograd`).
///
/// Supports groups = 1, any kernel size, stride, padding and dilation. Output channels are
/// processed in pairs of blocks (16); a trailing single block is handled.
public final class BlockedConv2D: @unchecked Sendable {
    /// The microkernel that `run` uses for `config` on output rows `outputWidth` wide, with
    /// `options` (a single pair of output blocks takes the 16-channel variant).
    public static func kernelName(for config: Conv2DConfig, outputWidth: Int, outputHeight: Int? = nil,
                                  options: KernelOptions = .fastest) -> String {
        let one = config.outChannels <= 16
        if options.width == .simd8 { return config.inChannels < 8 ? "f32-conv-im2col-6x16" : "f32-conv-nchw8c-6x16" }
        if usesWinograd(config, usesIm2col: config.inChannels < 8, outputHeight: outputHeight ?? outputWidth,
                        outputWidth: outputWidth, options: options) {
            return one ? "f32-conv-nchw8c-winograd2x2-12x16" : "f32-conv-nchw8c-winograd2x2-12x32"
        }
        if config.inChannels < 8 { return one ? "f32-conv-im2col-8x16" : "f32-conv-im2col-8x32" }
        if config.outChannels <= 8 { return "f32-conv-nchw8c-8x8" }
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
    /// The kernels `run` takes.
    public let options: KernelOptions
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
    var geometries: [GeometryKey: Geometry] = [:]
    let geometryLock = NSLock()

    /// weight: [Cout, Cin, kh, kw]; bias: [Cout] or nil. `im2col`: take the im2col route
    /// (inputs from NCHW tensors only); nil chooses it for input channels < 8.
    public init(weight: Tensor, bias: Tensor?, config c: Conv2DConfig, im2col: Bool? = nil,
                options: KernelOptions = .fastest) {
        precondition(c.groups == 1, "BlockedConv2D handles groups = 1 (depthwise has its own kernel)")
        precondition(weight.shape == c.weightShape, "weight must be \(c.weightShape), got \(weight.shape)")
        config = c
        self.options = options
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
        winograd = options.winograd && options.width == .simd16 && Self.winogradSupports(c, usesIm2col: usesIm2col) ? .allocate(capacity: 16 * c.inChannels * c.outChannels) : nil
        repack(weight: weight, bias: bias)
    }

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
    /// `inputImages`: output image i is computed from input image `inputImages[i]` (any N):
    /// the active samples of a batch read where they are, without gathering them first.
    public func run(_ input: BlockedBuffer, inputImages: [Int]? = nil, into output: BlockedBuffer,
                    placement: OutputPlacement? = nil, residual: BlockedBuffer? = nil, activation: Activation = .identity,
                    threads: Int? = nil, moments: ConvMoments? = nil) {
        let c = config, so = output.shape
        var si = input.shape
        if let images = inputImages {
            precondition(images.count == so.n && images.allSatisfy { $0 >= 0 && $0 < si.n },
                         "conv input images \(images.count) for an output of \(so.n), from \(si.n) images")
            si.n = so.n       // the shape the images form; offsets still use the input's image stride
        }
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
           Self.usesWinograd(c, usesIm2col: usesIm2col, outputHeight: so.h, outputWidth: so.w, options: options) {
            runWinograd(input, images: inputImages, into: output, residual: residual, activation: activation, threads: threads,
                        moments: moments,
                        u: UnsafePointer(u))
            return
        }
        if options.width == .simd16, let rowPixels = rowTilePixels(outputWidth: placement?.width ?? so.w) {
            runRows(input, images: inputImages, into: output, placement: placement, residual: residual, activation: activation,
                    threads: threads, tile: rowPixels, moments: moments)
            return
        }
        var g = geometryFor(input: si, output: so, placement: placement)
        // Active images: the pixel table points into the images given (one table per call).
        var remapped: UnsafeMutablePointer<Int>?
        defer { remapped?.deallocate() }
        if let images = inputImages {
            let padded = (g.pixels + Self.pixelPadding - 1) / Self.pixelPadding * Self.pixelPadding
            let table = UnsafeMutablePointer<Int>.allocate(capacity: padded)
            let perImage = g.pixels / so.n
            for i in 0..<padded {
                let n = Swift.min(i, g.pixels - 1) / perImage
                table[i] = g.pixIn[i] + (images[n] - n) * si.imageStride
            }
            remapped = table
            g.pixIn = table
        }
        // Tiles run over the pixels of all images at once (small images still fill whole tiles),
        // in chunks whose input fits in L2; every chunk sweeps all output-channel pairs.
        let threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        let width = options.width, tile = Self.tilePixels(width)
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
        let width = options.width, tile = Self.tilePixels(width)
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
