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
    public static var kernelName: String {
        KernelWidth.current == .simd16 ? "f32-convwgrad-nchw8c-12x32" : "f32-convwgrad-nchw8c-6x16"
    }

    /// x: [N, Cin, H, W] with halo ≥ padding; dy: [N, Cout, Ho, Wo] (any halo) → [Cout, Cin, kh, kw].
    public static func compute(input x: BlockedBuffer, gradOutput dy: BlockedBuffer, config c: Conv2DConfig,
                               threads: Int? = nil) -> Tensor {
        precondition(c.groups == 1, "blocked weight gradient handles groups = 1")
        let si = x.shape, so = dy.shape
        precondition(si.c == c.inChannels && si.halo >= c.padH && si.halo >= c.padW, "wgrad input \(si) mismatched")
        let o = c.outputSize(h: si.h, w: si.w)
        precondition(so.n == si.n && so.c == c.outChannels && so.h == o.h && so.w == o.w, "wgrad gradOutput \(so) mismatched")
        let taps = c.kernelH * c.kernelW
        let rows = c.inChannels * taps
        let wide = KernelWidth.current == .simd16
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
        // Start of every output row of one image: window origin in x, position in dy.
        var rowIn = [Int](repeating: 0, count: so.h), rowOut = rowIn
        for oy in 0..<so.h {
            rowIn[oy] = si.pixelOffset(oy * c.strideH - c.padH, -c.padW)
            rowOut[oy] = so.pixelOffset(oy, 0)
        }
        // dWᵀ tiles: [rowsPerTile][8·blocksPerTile] each (a wide tile with ≤ 2 blocks: [12][16]),
        // reshaped to [Cout, Cin, kh, kw] at the end.
        let tiles = rowTiles * coTiles
        let tileFloats = rowsPerTile * 8 * blocksPerTile
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: tiles * tileFloats)
        acc.initialize(repeating: 0, count: tiles * tileFloats)
        defer { acc.deallocate() }
        let (xp, yp) = (UnsafePointer(x.pointer), UnsafePointer(dy.pointer))
        // Output rows per chunk: dY (32 B per block) and input windows (≈ 32 B per block, times
        // the stride's area) of a chunk fit in about half of L1.
        let bytesPerPixel = 32 * (so.blocks + si.blocks * c.strideH * c.strideW)
        let chunkRows = Swift.max(1, (16 << 10) / (bytesPerPixel * so.w))
        rowOffsets.withUnsafeBufferPointer { ro in
            rowIn.withUnsafeBufferPointer { rin in
                rowOut.withUnsafeBufferPointer { rout in
                    let parts = Parallel.ranges(tiles, parts: Swift.max(1, threads ?? Parallel.defaultThreads))
                    Parallel.forEach(parts.count, threads: parts.count) { part in
                        for n in 0..<si.n {
                            var r0 = 0
                            while r0 < so.h {
                                let count = Swift.min(chunkRows, so.h - r0)
                                for tile in parts[part] {
                                    let rt = tile / coTiles, ct = tile % coTiles
                                    let b0 = ct * blocksPerTile, nb = Swift.min(blocksPerTile, so.blocks - b0)
                                    // A missing dY block reads an existing one again; its sums are never read.
                                    let bs = so.blockStride
                                    let (xt, rowsT) = (xp + n * si.imageStride, ro.baseAddress! + rt * rowsPerTile)
                                    let (yt, at) = (yp + n * so.imageStride + b0 * bs, acc + tile * tileFloats)
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
                                r0 += count
                            }
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
