/// Geometry of a channel-blocked NCHW8c activation with a zero halo (DESIGN §2).
///
/// Element (n, c, y, x) lives at `n·imageStride + (c/8)·blockStride + ((y+halo)·wp + x+halo)·8 + c%8`.
/// Channels are padded to a multiple of 8 with zeros, and the halo ring stays zero, so a
/// convolution with padding ≤ halo reads its neighbourhood without bounds checks.
public struct BlockedShape: Hashable, Sendable, CustomStringConvertible {
    public var n: Int, c: Int, h: Int, w: Int, halo: Int

    public init(n: Int, c: Int, h: Int, w: Int, halo: Int) {
        precondition(n > 0 && c > 0 && h > 0 && w > 0 && halo >= 0, "invalid blocked shape")
        (self.n, self.c, self.h, self.w, self.halo) = (n, c, h, w, halo)
    }

    /// Number of 8-channel blocks.
    public var blocks: Int { (c + 7) / 8 }
    public var hp: Int { h + 2 * halo }
    public var wp: Int { w + 2 * halo }
    /// Floats between consecutive channel blocks of one image.
    public var blockStride: Int { hp * wp * 8 }
    /// Floats between consecutive images.
    public var imageStride: Int { blocks * blockStride }
    public var count: Int { n * imageStride }
    /// Offset of pixel (y, x) inside a block, in floats (y, x may reach into the halo).
    @inline(__always) public func pixelOffset(_ y: Int, _ x: Int) -> Int { ((y + halo) * wp + x + halo) * 8 }

    public var description: String { "[\(n), \(c), \(h), \(w)]·8c halo \(halo)" }
}

/// A zero-initialised NCHW8c buffer: the activations that flow between blocked kernels.
/// A reference type on purpose: the engine allocates these once and reuses them.
public final class BlockedBuffer: @unchecked Sendable {
    public let shape: BlockedShape
    public let pointer: UnsafeMutablePointer<Float>
    /// The buffer whose first images this one views (nil: this buffer owns its memory).
    public let base: BlockedBuffer?

    public init(_ shape: BlockedShape) {
        self.shape = shape
        let raw = UnsafeMutableRawPointer.allocate(byteCount: shape.count * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: shape.count)
        pointer.initialize(repeating: 0, count: shape.count)
        base = nil
    }

    /// The first `images` images of `base` as a buffer of their own (same memory): a sub-batch
    /// in a buffer sized for a larger batch.
    public init(viewing base: BlockedBuffer, images: Int) {
        precondition(images > 0 && images <= base.shape.n, "a view of \(images) images of \(base.shape)")
        var s = base.shape
        s.n = images
        shape = s
        pointer = base.pointer
        self.base = base
    }

    deinit { if base == nil { UnsafeMutableRawPointer(pointer).deallocate() } }

    /// True when the halo ring and the padding channels of the last block are all zero: the
    /// invariant every kernel relies on (a check for tests, O(count)).
    public var haloIsZero: Bool {
        let s = shape
        for i in 0..<s.count {
            let q = (i % s.blockStride) / 8
            let (y, x) = (q / s.wp - s.halo, q % s.wp - s.halo)
            let channel = ((i % s.imageStride) / s.blockStride) * 8 + i % 8
            if (y < 0 || y >= s.h || x < 0 || x >= s.w || channel >= s.c) && pointer[i] != 0 { return false }
        }
        return true
    }

    /// Packs an NCHW tensor [n, c, h, w] of the buffer's shape into the interior.
    public func load(_ x: Tensor) {
        let s = shape
        precondition(x.shape == [s.n, s.c, s.h, s.w], "blocked load: expected \([s.n, s.c, s.h, s.w]), got \(x.shape)")
        x.withUnsafeBufferPointer { src in
            for n in 0..<s.n {
                for c in 0..<s.c {
                    let plane = src.baseAddress! + (n * s.c + c) * s.h * s.w
                    let dst = pointer + n * s.imageStride + (c / 8) * s.blockStride + c % 8
                    for y in 0..<s.h {
                        let row = dst + s.pixelOffset(y, 0)
                        for x in 0..<s.w { row[x * 8] = plane[y * s.w + x] }
                    }
                }
            }
        }
    }

    /// The interior as an NCHW tensor [n, c, h, w].
    public func toTensor() -> Tensor {
        let s = shape
        return Tensor(shape: [s.n, s.c, s.h, s.w]) { dst in
            for n in 0..<s.n {
                for c in 0..<s.c {
                    let plane = dst.baseAddress! + (n * s.c + c) * s.h * s.w
                    let src = pointer + n * s.imageStride + (c / 8) * s.blockStride + c % 8
                    for y in 0..<s.h {
                        let row = src + s.pixelOffset(y, 0)
                        for x in 0..<s.w { plane[y * s.w + x] = row[x * 8] }
                    }
                }
            }
        }
    }

    /// Convenience: a new buffer holding `x` [n, c, h, w].
    public convenience init(_ x: Tensor, halo: Int) {
        precondition(x.rank == 4, "blocked buffers hold [N, C, H, W] tensors, got \(x.shape)")
        self.init(BlockedShape(n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3], halo: halo))
        load(x)
    }
}
