/// Moving channels and samples between NCHW8c buffers: what concatenation, slicing and
/// sub-batches need. Halos are never written.
extension BlockedOps {
    /// y[:, offset + k] (= or +=) x[:, channels.lowerBound + k] for k < channels.count over the
    /// interior, any channel alignment: channel counts need not be multiples of 8 (DenseNet-style
    /// growth of 6 or 12 lands mid-block). Other channels of y are left as they are.
    /// Whole aligned blocks copy 8 lanes at a time; a block shared with other channels goes lane by lane.
    public static func copyChannels(_ x: BlockedBuffer, _ channels: Range<Int>, into y: BlockedBuffer, at offset: Int,
                                    accumulate: Bool = false, threads: Int? = nil) {
        let s = x.shape, o = y.shape
        precondition(s.n == o.n && s.h == o.h && s.w == o.w && channels.lowerBound >= 0 && channels.upperBound <= s.c
                     && offset >= 0 && offset + channels.count <= o.c, "copyChannels: \(channels) of \(s) at \(offset) of \(o)")
        guard !channels.isEmpty else { return }
        let firstBlock = offset / 8, lastBlock = (offset + channels.count - 1) / 8
        let blocks = lastBlock - firstBlock + 1
        Parallel.forEach(s.n * blocks, threads: threads) { t in
            let n = t / blocks, db = firstBlock + t % blocks
            // Lanes of this destination block that receive channels, and where they come from.
            let lo = Swift.max(offset, db * 8), hi = Swift.min(offset + channels.count, db * 8 + 8)
            let src0 = channels.lowerBound + lo - offset
            let dst = y.pointer + n * o.imageStride + db * o.blockStride
            if hi - lo == 8 && src0 % 8 == 0 {
                let src = UnsafePointer(x.pointer + n * s.imageStride + (src0 / 8) * s.blockStride)
                for row in 0..<s.h {
                    let a = src + s.pixelOffset(row, 0), b = dst + o.pixelOffset(row, 0)
                    if accumulate {
                        for i in stride(from: 0, to: s.w * 8, by: 8) { store8(load8(b + i) + load8(a + i), b + i) }
                    } else {
                        b.update(from: a, count: s.w * 8)
                    }
                }
                return
            }
            for ch in lo..<hi {
                let sc = src0 + ch - lo
                let src = UnsafePointer(x.pointer + n * s.imageStride + (sc / 8) * s.blockStride + sc % 8)
                let d = dst + ch % 8
                for row in 0..<s.h {
                    let a = src + s.pixelOffset(row, 0), b = d + o.pixelOffset(row, 0)
                    if accumulate {
                        for i in stride(from: 0, to: s.w * 8, by: 8) { b[i] += a[i] }
                    } else {
                        for i in stride(from: 0, to: s.w * 8, by: 8) { b[i] = a[i] }
                    }
                }
            }
        }
    }

    /// Sets the interior of every plane of y to zero.
    public static func zeroInterior(_ y: BlockedBuffer, threads: Int? = nil) {
        let s = y.shape
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let base = y.pointer + t * s.blockStride
            for row in 0..<s.h { (base + s.pixelOffset(row, 0)).update(repeating: 0, count: s.w * 8) }
        }
    }

    /// Sets images `rows` of y to zero, whole planes (the halo stays zero).
    public static func zeroImages(_ y: BlockedBuffer, rows: [Int], threads: Int? = nil) {
        let s = y.shape
        precondition(rows.allSatisfy { $0 >= 0 && $0 < s.n }, "zeroImages: rows of \(s)")
        rows.withUnsafeBufferPointer { rp in
            let rp = rp.baseAddress!
            Parallel.forEach(rows.count * s.blocks, threads: threads) { t in
                (y.pointer + rp[t / s.blocks] * s.imageStride + (t % s.blocks) * s.blockStride).update(repeating: 0, count: s.blockStride)
            }
        }
    }

    /// y[i] (= or +=) x[rows[i]] for every image i of y: a sub-batch gathered. Shapes other than
    /// N must match, halos included.
    public static func copyImages(_ x: BlockedBuffer, rows: [Int], into y: BlockedBuffer, accumulate: Bool = false,
                                  threads: Int? = nil) {
        precondition(rows.count == y.shape.n && rows.allSatisfy { $0 >= 0 && $0 < x.shape.n }, "copyImages: rows of \(x.shape) into \(y.shape)")
        moveImages(x, into: y, pairs: rows.count, accumulate: accumulate, threads: threads) { (rows[$0], $0) }
    }

    /// y[rows[i]] (= or +=) x[i] for every image i of x: the inverse of `copyImages` (distinct rows).
    public static func scatterImages(_ x: BlockedBuffer, rows: [Int], into y: BlockedBuffer, accumulate: Bool = false,
                                     threads: Int? = nil) {
        precondition(rows.count == x.shape.n && rows.allSatisfy { $0 >= 0 && $0 < y.shape.n } && Set(rows).count == rows.count,
                     "scatterImages: rows of \(x.shape) into \(y.shape)")
        moveImages(x, into: y, pairs: rows.count, accumulate: accumulate, threads: threads) { ($0, rows[$0]) }
    }

    /// Image `from` of x (= or +=) into image `to` of y for `pairs` (from, to) pairs, whole block planes.
    private static func moveImages(_ x: BlockedBuffer, into y: BlockedBuffer, pairs: Int, accumulate: Bool, threads: Int?,
                                   _ pair: (Int) -> (from: Int, to: Int)) {
        let s = x.shape, o = y.shape
        precondition((s.c, s.h, s.w, s.halo) == (o.c, o.h, o.w, o.halo), "moving images of \(s) into \(o)")
        let moves = (0..<pairs).map(pair)
        moves.withUnsafeBufferPointer { mp in
            let mp = mp.baseAddress!
            Parallel.forEach(pairs * s.blocks, threads: threads) { t in
                let (i, b) = (t / s.blocks, t % s.blocks)
                let a = UnsafePointer(x.pointer + mp[i].from * s.imageStride + b * s.blockStride)
                let d = y.pointer + mp[i].to * o.imageStride + b * o.blockStride
                if accumulate {
                    for k in stride(from: 0, to: s.blockStride, by: 8) { store8(load8(d + k) + load8(a + k), d + k) }
                } else {
                    d.update(from: a, count: s.blockStride)
                }
            }
        }
    }
}
