import DynamicCore
import Foundation

/// A blocked buffer lent by a `BufferPool`: it goes back to the pool when its last reference
/// goes, so a forward (and a training step's backward) reuses the buffers of the previous one
/// without a plan. Its halo and its padding channels are zero; its interior is whatever the
/// last user left there, so every op writes the whole interior of what it takes.
public final class PooledBuffer: @unchecked Sendable {
    public let buffer: BlockedBuffer
    /// nil for a buffer the caller owns (`Engine.map(wrapping:)`): it is never given to a pool.
    private let pool: BufferPool?

    init(_ buffer: BlockedBuffer, pool: BufferPool?) {
        self.buffer = buffer
        self.pool = pool
    }

    deinit { pool?.give(buffer) }

    public var shape: BlockedShape { buffer.shape }
    public var pointer: UnsafeMutablePointer<Float> { buffer.pointer }
}

/// Free NCHW8c buffers by image shape (C, H, W, halo), each with room for some number of images.
/// A request for N images gets the smallest free buffer with room for N, as a view of its first
/// N images, so sub-batches of every size reuse the buffers of the full batch instead of each
/// size allocating its own. Buffers are allocated on first demand (exactly the size asked) and
/// kept while the pool lives: after the first forward of a batch size, the engine allocates nothing.
final class BufferPool: @unchecked Sendable {
    private var free: [BlockedShape: [BlockedBuffer]] = [:]
    private let lock = NSLock()
    /// Bytes of every buffer this pool has allocated.
    private(set) var allocatedBytes = 0

    func take(_ shape: BlockedShape) -> PooledBuffer {
        var key = shape
        key.n = 1
        lock.lock()
        var found: BlockedBuffer?
        // The smallest that fits; among equals the last given back (still warm in cache).
        var pick: Int?
        if let list = free[key] {
            for i in list.indices.reversed() where list[i].shape.n >= shape.n {
                if pick == nil || list[i].shape.n < list[pick!].shape.n { pick = i }
            }
        }
        if let pick {
            found = free[key]!.remove(at: pick)
        } else {
            allocatedBytes += shape.count * 4
        }
        lock.unlock()
        let whole = found ?? BlockedBuffer(shape)
        return PooledBuffer(whole.shape.n == shape.n ? whole : BlockedBuffer(viewing: whole, images: shape.n), pool: self)
    }

    func give(_ b: BlockedBuffer) {
        let whole = b.base ?? b
        var key = whole.shape
        key.n = 1
        lock.lock()
        free[key, default: []].append(whole)
        lock.unlock()
    }
}
