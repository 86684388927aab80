import DynamicCore
import Foundation

/// A blocked buffer lent by a `BufferPool`: it goes back to the pool when its last reference
/// goes, so a forward (and a training step's backward) reuses the buffers of the previous one
/// without a plan. Its halo and its padding channels are zero; its interior is whatever the
/// last user left there, so every op writes the whole interior of what it takes.
public final class PooledBuffer: @unchecked Sendable {
    public let buffer: BlockedBuffer
    private let pool: BufferPool

    init(_ buffer: BlockedBuffer, pool: BufferPool) {
        self.buffer = buffer
        self.pool = pool
    }

    deinit { pool.give(buffer) }

    public var shape: BlockedShape { buffer.shape }
    public var pointer: UnsafeMutablePointer<Float> { buffer.pointer }
}

/// Free NCHW8c buffers by shape. Buffers are allocated on first demand and never freed while
/// the pool lives: after the first forward of a shape, the engine allocates nothing.
final class BufferPool: @unchecked Sendable {
    private var free: [BlockedShape: [BlockedBuffer]] = [:]
    private let lock = NSLock()
    /// Bytes of every buffer this pool has allocated.
    private(set) var allocatedBytes = 0

    func take(_ shape: BlockedShape) -> PooledBuffer {
        lock.lock()
        let b = free[shape]?.popLast()
        if b == nil { allocatedBytes += shape.count * 4 }
        lock.unlock()
        return PooledBuffer(b ?? BlockedBuffer(shape), pool: self)
    }

    func give(_ b: BlockedBuffer) {
        lock.lock()
        free[b.shape, default: []].append(b)
        lock.unlock()
    }

    /// Drops every free buffer (buffers still lent come back later and are kept).
    func trim() {
        lock.lock()
        free.removeAll()
        lock.unlock()
    }
}
