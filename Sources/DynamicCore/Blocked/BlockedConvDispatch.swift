import DynamicShims
import Foundation

// How `BlockedConv2D.run` spreads a convolution over tiles and threads: the 16-lane row route, and
// the pixel-table tiles of both widths.
extension BlockedConv2D {

    /// Pixels per row tile when the row kernels apply: taps 3 wide at stride 1 and dilation 1 along
    /// x, output rows at least one tile wide. 16 for a single pair of output blocks, else 8.
    func rowTilePixels(outputWidth: Int) -> Int? {
        usesIm2col ? nil : Self.rowTilePixels(config, pairs: pairs, outputWidth: outputWidth)
    }

    static func rowTilePixels(_ c: Conv2DConfig, pairs: Int, outputWidth: Int) -> Int? {
        // One output block: the 8 × 8 pixel-table kernel (`conv8x8`) wastes no lanes.
        guard c.kernelW == 3, c.strideW == 1, c.dilationW == 1, c.outChannels > 8 else { return nil }
        let p = pairs == 1 ? 16 : 8
        return outputWidth >= p ? p : nil
    }

    /// `run` on row tiles: `tile` consecutive output pixels of one row (a row's last tile is
    /// shifted left to end at the row's end and stores only the pixels the one before left).
    func runRows(_ input: BlockedBuffer, images: [Int]?, into output: BlockedBuffer, placement: OutputPlacement?,
                         residual: BlockedBuffer?, activation: Activation, threads: Int?, tile: Int, moments: ConvMoments?) {
        let c = config, si = input.shape, so = output.shape
        let p = placement ?? OutputPlacement(height: so.h, width: so.w, strideH: 1, strideW: 1, offsetY: 0, offsetX: 0)
        let segments = (p.width + tile - 1) / tile
        let inputImage = images ?? Array(0..<so.n)
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
                let xo = x + inputImage[n] * si.imageStride + si.pixelOffset(oy * c.strideH - c.padH, ox0 - c.padW)
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


    /// Part `part` of `parts`: split output-channel pairs when there are enough, else pixel groups.
    func split(part: Int, of parts: Int, groups: Int, pairAlign: Int) -> (Range<Int>, Range<Int>) {
        let units = (pairs + pairAlign - 1) / pairAlign
        if units >= parts && units % parts == 0 || units >= 4 * parts {
            let r = Parallel.ranges(pairs, parts: parts, align: pairAlign)
            return (part < r.count ? r[part] : 0..<0, 0..<groups)
        }
        let r = Parallel.ranges(groups, parts: parts)
        return (0..<pairs, part < r.count ? r[part] : 0..<0)
    }

    /// Runs pixel tiles `gr` (of `tilePixels(width)` pixels) × channel pairs `jr` on the kernel of `width`.
    func tiles(width: KernelWidth, x: UnsafePointer<Float>, cbStride: Int, prefetchRows: Int = 0,
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
            if width == .simd16 && outBlocks == 1 {
                Self.conv8x8(x, pixIn + p0, tp, taps, lanes, reductionBlocks, cbStride, packed + j * panel, y + off,
                             pixOut + p0, so.blockStride, nPix, bias + 16 * j, res, lo, hi, sj)
                return 1
            }
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

}
