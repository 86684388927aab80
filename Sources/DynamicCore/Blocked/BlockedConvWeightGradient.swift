import Foundation

/// Weight gradient of a dense convolution on NCHW8c buffers, kernel `f32-convwgrad-nchw8c-12x8`:
/// dW[co, ci, ky, kx] = Σ over images and output pixels p of dY[co, p] · X[ci, window(p) + (ky, kx)].
///
/// A tile is 12 reduction rows (input channel, tap) × 8 output channels: 12 SIMD8 accumulators
/// over output channels, one dY vector load and 12 broadcasts per pixel. Every tile reduces the
/// images in order, so the result does not depend on the thread count.
public enum BlockedConvWeightGradient {
    public static let kernelName = "f32-convwgrad-nchw8c-12x8"
    static let rowsPerTile = 12

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
        let rowTiles = (rows + rowsPerTile - 1) / rowsPerTile
        let coBlocks = so.blocks
        // Row r = (ci, tap): its input offset relative to a pixel's window origin.
        var rowOffsets = [Int](repeating: 0, count: rowTiles * rowsPerTile)
        for r in 0..<rowTiles * rowsPerTile {
            let q = Swift.min(r, rows - 1)        // padding rows repeat the last one; never stored
            let ci = q / taps, t = q % taps
            rowOffsets[r] = (ci / 8) * si.blockStride + ((t / c.kernelW) * c.dilationH * si.wp
                                                         + (t % c.kernelW) * c.dilationW) * 8 + ci % 8
        }
        // Pixel offsets of one image (window origin in x, position in dy).
        let perImage = so.h * so.w
        var pixIn = [Int](repeating: 0, count: perImage), pixOut = [Int](repeating: 0, count: perImage)
        for p in 0..<perImage {
            let oy = p / so.w, ox = p % so.w
            pixIn[p] = si.pixelOffset(oy * c.strideH - c.padH, ox * c.strideW - c.padW)
            pixOut[p] = so.pixelOffset(oy, ox)
        }
        // dWᵀ tiles: [rowTiles·12][coBlocks·8], reshaped to [Cout, Cin, kh, kw] at the end.
        let tiles = rowTiles * coBlocks
        let acc = UnsafeMutablePointer<Float>.allocate(capacity: tiles * rowsPerTile * 8)
        acc.initialize(repeating: 0, count: tiles * rowsPerTile * 8)
        defer { acc.deallocate() }
        let (xp, yp) = (UnsafePointer(x.pointer), UnsafePointer(dy.pointer))
        rowOffsets.withUnsafeBufferPointer { ro in
            pixIn.withUnsafeBufferPointer { pin in
                pixOut.withUnsafeBufferPointer { pout in
                    // Each thread owns a range of tiles and walks the images in order, so an
                    // image's input is read from memory once per thread and reused from L2 by
                    // all of that thread's tiles.
                    let parts = Parallel.ranges(tiles, parts: Swift.max(1, threads ?? Parallel.defaultThreads))
                    Parallel.forEach(parts.count, threads: parts.count) { part in
                        for n in 0..<si.n {
                            for tile in parts[part] {
                                let rt = tile / coBlocks, cb = tile % coBlocks
                                tile12x8(xp + n * si.imageStride, ro.baseAddress! + rt * rowsPerTile,
                                         yp + n * so.imageStride + cb * so.blockStride,
                                         pin.baseAddress!, pout.baseAddress!, perImage, acc + tile * rowsPerTile * 8)
                            }
                        }
                    }
                }
            }
        }
        return Tensor(shape: c.weightShape) { w in
            for tile in 0..<tiles {
                let rt = tile / coBlocks, cb = tile % coBlocks
                for i in 0..<rowsPerTile {
                    let r = rt * rowsPerTile + i
                    guard r < rows else { continue }
                    let ci = r / taps, t = r % taps
                    for k in 0..<8 {
                        let co = cb * 8 + k
                        guard co < c.outChannels else { continue }
                        w[(co * c.inChannels + ci) * taps + t] = acc[(tile * rowsPerTile + i) * 8 + k]
                    }
                }
            }
        }
    }

    /// acc[12][8] += Σ over `pixels` of broadcast(x[pixIn[p] + rows[i]]) · dy[pixOut[p]].
    @inline(never)
    static func tile12x8(_ x: UnsafePointer<Float>, _ rows: UnsafePointer<Int>, _ dy: UnsafePointer<Float>,
                         _ pixIn: UnsafePointer<Int>, _ pixOut: UnsafePointer<Int>, _ pixels: Int,
                         _ acc: UnsafeMutablePointer<Float>) {
        var a0 = load8(acc), a1 = load8(acc + 8), a2 = load8(acc + 16), a3 = load8(acc + 24)
        var a4 = load8(acc + 32), a5 = load8(acc + 40), a6 = load8(acc + 48), a7 = load8(acc + 56)
        var a8 = load8(acc + 64), a9 = load8(acc + 72), a10 = load8(acc + 80), a11 = load8(acc + 88)
        let r0 = rows[0], r1 = rows[1], r2 = rows[2], r3 = rows[3], r4 = rows[4], r5 = rows[5]
        let r6 = rows[6], r7 = rows[7], r8 = rows[8], r9 = rows[9], r10 = rows[10], r11 = rows[11]
        for p in 0..<pixels {
            let g = load8(dy + pixOut[p])
            let xb = x + pixIn[p]
            a0 = fmadd(a0, SIMD8(repeating: xb[r0]), g); a1 = fmadd(a1, SIMD8(repeating: xb[r1]), g)
            a2 = fmadd(a2, SIMD8(repeating: xb[r2]), g); a3 = fmadd(a3, SIMD8(repeating: xb[r3]), g)
            a4 = fmadd(a4, SIMD8(repeating: xb[r4]), g); a5 = fmadd(a5, SIMD8(repeating: xb[r5]), g)
            a6 = fmadd(a6, SIMD8(repeating: xb[r6]), g); a7 = fmadd(a7, SIMD8(repeating: xb[r7]), g)
            a8 = fmadd(a8, SIMD8(repeating: xb[r8]), g); a9 = fmadd(a9, SIMD8(repeating: xb[r9]), g)
            a10 = fmadd(a10, SIMD8(repeating: xb[r10]), g); a11 = fmadd(a11, SIMD8(repeating: xb[r11]), g)
        }
        store8(a0, acc); store8(a1, acc + 8); store8(a2, acc + 16); store8(a3, acc + 24)
        store8(a4, acc + 32); store8(a5, acc + 40); store8(a6, acc + 48); store8(a7, acc + 56)
        store8(a8, acc + 64); store8(a9, acc + 72); store8(a10, acc + 80); store8(a11, acc + 88)
    }
}
