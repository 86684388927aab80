import Foundation

/// Weight gradient of a dense convolution on NCHW8c buffers:
/// dW[co, ci, ky, kx] = Σ over images and output pixels p of dY[co, p] · X[ci, window(p) + (ky, kx)].
///
/// `f32-convwgrad-nchw8c-6x16` (`KernelWidth.simd8`): a tile is 6 reduction rows (input channel,
/// tap) × 16 output channels (two dY blocks): 12 SIMD8 accumulators, two dY vector loads and six
/// broadcasts per pixel — the register shape of the forward kernel. `f32-convwgrad-nchw8c-12x32`
/// (`.simd16`): 12 rows × 32 channels (four dY blocks as two 16-lane vectors), 24 accumulators;
/// 12 × 16 for a trailing pair of blocks. Pixels are walked row by row (no per-pixel index loads), in chunks of output
/// rows whose inputs stay in L1 while all of a thread's tiles sweep them. Every tile reduces the
/// images in order, so the result does not depend on the thread count.
public enum BlockedConvWeightGradient {
    /// The microkernel `compute` uses for `config`, output rows `outputWidth` wide and a dY halo.
    public static func kernelName(for c: Conv2DConfig, outputWidth: Int, gradOutputHalo: Int,
                                  options: KernelOptions = .fastest) -> String {
        guard options.width == .simd16 else { return "f32-convwgrad-nchw8c-6x16" }
        let one = c.outChannels <= 16
        if usesRows(c, outputBlocks: (c.outChannels + 7) / 8, outputWidth: outputWidth, gradOutputHalo: gradOutputHalo,
                    width: options.width) {
            return one ? "f32-convwgrad-nchw8c-row8x16" : "f32-convwgrad-nchw8c-row4x32"
        }
        return one ? "f32-convwgrad-nchw8c-12x16" : "f32-convwgrad-nchw8c-12x32"
    }

    /// Whether the 16-lane row kernels run. They pay where rows are long or output channels few
    /// (16-channel tiles lose half their broadcasts to the 12-row tiles); on short rows of many
    /// channels the 12 × 32 tiles win (measured at batch 128: 64 channels on 8×8, 173 vs 211
    /// GFLOP/s on one core).
    static func usesRows(_ c: Conv2DConfig, outputBlocks: Int, outputWidth: Int, gradOutputHalo: Int,
                         width: KernelWidth) -> Bool {
        width == .simd16 && c.kernelW == 3 && c.strideW == 1 && c.dilationW == 1 && gradOutputHalo >= 1
            && (outputBlocks <= 2 || outputWidth >= 32)
    }

    /// x: [N, Cin, H, W] with halo ≥ padding; dy: [N, Cout, Ho, Wo] (any halo) → [Cout, Cin, kh, kw].
    public static func compute(input x: BlockedBuffer, gradOutput dy: BlockedBuffer, config c: Conv2DConfig,
                               threads: Int? = nil, options: KernelOptions = .fastest) -> Tensor {
        precondition(c.groups == 1, "blocked weight gradient handles groups = 1")
        let si = x.shape, so = dy.shape
        precondition(si.c == c.inChannels && si.halo >= c.padH && si.halo >= c.padW, "wgrad input \(si) mismatched")
        let o = c.outputSize(h: si.h, w: si.w)
        precondition(so.n == si.n && so.c == c.outChannels && so.h == o.h && so.w == o.w, "wgrad gradOutput \(so) mismatched")
        if usesRows(c, outputBlocks: so.blocks, outputWidth: so.w, gradOutputHalo: so.halo, width: options.width) {
            return computeRows(input: x, gradOutput: dy, config: c, threads: threads)
        }
        let taps = c.kernelH * c.kernelW
        let rows = c.inChannels * taps
        let wide = options.width == .simd16
        let rowsPerTile = wide ? 12 : 6
        let blocksPerTile = wide ? 4 : 2        // dY blocks (8 output channels each) per tile
        let rowTiles = (rows + rowsPerTile - 1) / rowsPerTile
        let coTiles = (so.blocks + blocksPerTile - 1) / blocksPerTile
        // Row r = (ci, tap): its input offset relative to a pixel's window origin.
        var rowOffsets = [Int](repeating: 0, count: rowTiles * rowsPerTile)
        for r in 0..<rowTiles * rowsPerTile {
            let q = Swift.min(r, rows - 1)        // padding rows repeat the last one; never stored
            let ci = q / taps, t = q % taps
            rowOffsets[r] = (ci / 8) * si.blockStride + ((t / c.kernelW) * c.dilationH * si.wp
                                                         + (t % c.kernelW) * c.dilationW) * 8 + ci % 8
        }
        let (rowIn, rowOut) = rowStarts(si, so, c)
        // dWᵀ tiles: [rowsPerTile][8·blocksPerTile] each (a wide tile with ≤ 2 blocks: [12][16]),
        // reshaped to [Cout, Cin, kh, kw] at the end.
        let tiles = rowTiles * coTiles
        let tileFloats = rowsPerTile * 8 * blocksPerTile
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: tiles * tileFloats)
        acc.initialize(repeating: 0, count: tiles * tileFloats)
        defer { acc.deallocate() }
        let (xp, yp) = (UnsafePointer(x.pointer), UnsafePointer(dy.pointer))
        // Output rows per chunk: dY (32 B per block) and input windows (≈ 32 B per block, times
        // the stride's area) of a chunk fit in about an eighth of L2. The tiles' accumulators
        // (up to ~150 KB) leave no room in L1 anyway; long chunks amortize their loads and stores
        // (measured at batch 128 on two threads: 64 channels on 8×8, 69–73 % → 77–79 % of peak).
        let bytesPerPixel = 32 * (so.blocks + si.blocks * c.strideH * c.strideW)
        rowOffsets.withUnsafeBufferPointer { ro in
            rowIn.withUnsafeBufferPointer { rin in
                rowOut.withUnsafeBufferPointer { rout in
                    sweep(tiles: tiles, rows: si.n * so.h, chunkRows: chunkBytes / (bytesPerPixel * so.w),
                          threads: threads) { r0, count, tile in
                        let rt = tile / coTiles, ct = tile % coTiles
                        let b0 = ct * blocksPerTile, nb = Swift.min(blocksPerTile, so.blocks - b0)
                        // A missing dY block reads an existing one again; its sums are never read.
                        let bs = so.blockStride
                        let (xt, rowsT) = (xp, ro.baseAddress! + rt * rowsPerTile)
                        let (yt, at) = (yp + b0 * bs, acc + tile * tileFloats)
                        let (ri, rq) = (rin.baseAddress! + r0, rout.baseAddress! + r0)
                        if !wide {
                            tile6x16(xt, rowsT, yt, nb > 1 ? bs : 0, ri, rq, count, so.w, 8 * c.strideW, at)
                        } else if nb > 2 {
                            tile12x32(xt, rowsT, yt, bs, 2 * bs, nb > 3 ? 3 * bs : 2 * bs, ri, rq, count, so.w,
                                      8 * c.strideW, at)
                        } else {
                            tile12x16(xt, rowsT, yt, nb > 1 ? bs : 0, 0, 0, ri, rq, count, so.w, 8 * c.strideW, at)
                        }
                    }
                }
            }
        }
        return Tensor(shape: c.weightShape) { w in
            for tile in 0..<tiles {
                let rt = tile / coTiles, ct = tile % coTiles
                let nb = Swift.min(blocksPerTile, so.blocks - ct * blocksPerTile)
                let rowStride = wide && nb <= 2 ? 16 : 8 * blocksPerTile
                for i in 0..<rowsPerTile {
                    let r = rt * rowsPerTile + i
                    guard r < rows else { continue }
                    let ci = r / taps, t = r % taps
                    for k in 0..<rowStride {
                        let co = ct * 8 * blocksPerTile + k
                        guard co < c.outChannels else { continue }
                        w[(co * c.inChannels + ci) * taps + t] = acc[tile * tileFloats + i * rowStride + k]
                    }
                }
            }
        }
    }

    /// `compute` on the 16-lane row kernels (taps 3 wide at stride 1, dY halo ≥ 1): a tile is
    /// (input block, tap row ky, 4 or 8 input channels, 32 or 16 output channels), its 3 × 8 × 16
    /// sums in registers while it sweeps output rows; tiles split over threads, each summing the
    /// images and rows in order (thread-count independent).
    static func computeRows(input x: BlockedBuffer, gradOutput dy: BlockedBuffer, config c: Conv2DConfig,
                            threads: Int?) -> Tensor {
        let si = x.shape, so = dy.shape
        // Output-channel groups: quads of blocks (32 channels, 4 input channels per tile) and a
        // trailing pair or single block (16 channels, 8 input channels per tile).
        struct Group { let block: Int, blocks: Int, channelsPerTile: Int }
        var groups: [Group] = []
        var b = 0
        while b < so.blocks {
            let n = Swift.min(so.blocks - b, so.blocks - b > 2 ? 4 : 2)
            groups.append(Group(block: b, blocks: n, channelsPerTile: n > 2 ? 4 : 8))
            b += n
        }
        // Tiles: (group, input block, half, ky); acc of 3·8·16 floats each.
        struct Tile { let group: Group, inBlock: Int, ciOffset: Int, ky: Int }
        var tiles: [Tile] = []
        for g in groups {
            for ib in 0..<si.blocks {
                for off in stride(from: 0, to: 8, by: g.channelsPerTile) {
                    for ky in 0..<c.kernelH { tiles.append(Tile(group: g, inBlock: ib, ciOffset: off, ky: ky)) }
                }
            }
        }
        let tileFloats = 3 * 8 * 16
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: tiles.count * tileFloats)
        acc.initialize(repeating: 0, count: tiles.count * tileFloats)
        defer { acc.deallocate() }
        let (rowIn, rowOut) = rowStarts(si, so, c)
        let bytesPerPixel = 32 * (so.blocks + si.blocks * c.strideH)
        let (xp, yp) = (UnsafePointer(x.pointer), UnsafePointer(dy.pointer))
        let bs = so.blockStride
        rowIn.withUnsafeBufferPointer { rin in
            rowOut.withUnsafeBufferPointer { rout in
                sweep(tiles: tiles.count, rows: si.n * so.h, chunkRows: chunkBytes / (bytesPerPixel * so.w),
                      threads: threads) { r0, count, t in
                    let tile = tiles[t], g = tile.group
                    let xt = xp + tile.inBlock * si.blockStride + tile.ky * c.dilationH * si.wp * 8 + tile.ciOffset
                    let yt = yp + g.block * bs
                    // A missing dY block reads an existing one again; its sums are never read.
                    let (ri, rq, at) = (rin.baseAddress! + r0, rout.baseAddress! + r0, acc + t * tileFloats)
                    if g.blocks > 2 {
                        wgradRow4x32(xt, yt, bs, 2 * bs, g.blocks > 3 ? 3 * bs : 2 * bs, ri, rq, count, so.w + 2, at)
                    } else {
                        wgradRow8x16(xt, yt, g.blocks > 1 ? bs : 0, 0, 0, ri, rq, count, so.w + 2, at)
                    }
                }
            }
        }
        let kk = c.kernelH * c.kernelW
        return Tensor(shape: c.weightShape) { w in
            for (t, tile) in tiles.enumerated() {
                let g = tile.group, cpt = g.channelsPerTile, width = 128 / cpt   // 32 or 16 output channels
                for kx in 0..<3 {
                    for ci in 0..<cpt {
                        let cin = 8 * tile.inBlock + tile.ciOffset + ci
                        guard cin < c.inChannels else { continue }
                        for k in 0..<width {
                            let co = 8 * g.block + k
                            guard co < c.outChannels && k < 8 * g.blocks else { continue }
                            w[(co * c.inChannels + cin) * kk + tile.ky * 3 + kx] = acc[t * tileFloats + (kx * cpt + ci) * width + k]
                        }
                    }
                }
            }
        }
    }

    /// Bytes of input and dY per sweep chunk.
    static let chunkBytes = 256 << 10

    /// Start of every output row of every image, in image order: window origin in x (tap (0, 0))
    /// and first pixel in dy, from the buffers' starts.
    static func rowStarts(_ si: BlockedShape, _ so: BlockedShape, _ c: Conv2DConfig) -> (rowIn: [Int], rowOut: [Int]) {
        var rowIn = [Int](repeating: 0, count: si.n * so.h), rowOut = rowIn
        for n in 0..<si.n {
            for oy in 0..<so.h {
                rowIn[n * so.h + oy] = n * si.imageStride + si.pixelOffset(oy * c.strideH - c.padH, -c.padW)
                rowOut[n * so.h + oy] = n * so.imageStride + so.pixelOffset(oy, 0)
            }
        }
        return (rowIn, rowOut)
    }

    /// Calls body(firstRow, rowCount, tile) for every chunk of `chunkRows` rows (at least 1) of
    /// all images' output rows in order, each thread sweeping its contiguous share of the tiles
    /// over a chunk while the chunk's inputs are in cache. Chunks run across images: small
    /// images (8×8) would otherwise pay a tile's accumulator loads and stores every 64 pixels.
    /// Every tile sums images and rows in order, whatever the thread count.
    static func sweep(tiles: Int, rows: Int, chunkRows: Int, threads: Int?, _ body: (Int, Int, Int) -> Void) {
        let chunk = Swift.max(1, chunkRows)
        let parts = Parallel.ranges(tiles, parts: Swift.max(1, threads ?? Parallel.defaultThreads))
        Parallel.forEach(parts.count, threads: parts.count) { part in
            var r0 = 0
            while r0 < rows {
                let count = Swift.min(chunk, rows - r0)
                for tile in parts[part] { body(r0, count, tile) }
                r0 += count
            }
        }
    }

    /// acc[6][16] += Σ over the pixels of `rowCount` output rows × `width` of
    /// broadcast(x[window + rows[i]]) · (dy block, dy second block).
    @inline(never)
    static func tile6x16(_ x: UnsafePointer<Float>, _ rows: UnsafePointer<Int>, _ dy: UnsafePointer<Float>,
                         _ second: Int, _ rowIn: UnsafePointer<Int>, _ rowOut: UnsafePointer<Int>, _ rowCount: Int,
                         _ width: Int, _ xStep: Int, _ acc: UnsafeMutablePointer<Float>) {
        var c00 = load8(acc), c01 = load8(acc + 8), c10 = load8(acc + 16), c11 = load8(acc + 24)
        var c20 = load8(acc + 32), c21 = load8(acc + 40), c30 = load8(acc + 48), c31 = load8(acc + 56)
        var c40 = load8(acc + 64), c41 = load8(acc + 72), c50 = load8(acc + 80), c51 = load8(acc + 88)
        let r0 = rows[0], r1 = rows[1], r2 = rows[2], r3 = rows[3], r4 = rows[4], r5 = rows[5]
        for r in 0..<rowCount {
            var xr = x + rowIn[r], yr = dy + rowOut[r]
            for _ in 0..<width {
                let g0 = load8(yr), g1 = load8(yr + second)
                var a = SIMD8<Float>(repeating: xr[r0]); c00 = fmadd(c00, a, g0); c01 = fmadd(c01, a, g1)
                a = SIMD8<Float>(repeating: xr[r1]); c10 = fmadd(c10, a, g0); c11 = fmadd(c11, a, g1)
                a = SIMD8<Float>(repeating: xr[r2]); c20 = fmadd(c20, a, g0); c21 = fmadd(c21, a, g1)
                a = SIMD8<Float>(repeating: xr[r3]); c30 = fmadd(c30, a, g0); c31 = fmadd(c31, a, g1)
                a = SIMD8<Float>(repeating: xr[r4]); c40 = fmadd(c40, a, g0); c41 = fmadd(c41, a, g1)
                a = SIMD8<Float>(repeating: xr[r5]); c50 = fmadd(c50, a, g0); c51 = fmadd(c51, a, g1)
                xr += xStep
                yr += 8
            }
        }
        store8(c00, acc); store8(c01, acc + 8); store8(c10, acc + 16); store8(c11, acc + 24)
        store8(c20, acc + 32); store8(c21, acc + 40); store8(c30, acc + 48); store8(c31, acc + 56)
        store8(c40, acc + 64); store8(c41, acc + 72); store8(c50, acc + 80); store8(c51, acc + 88)
    }
}
