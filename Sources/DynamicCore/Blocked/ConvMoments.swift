/// Per-channel Σy and Σy² of a convolution's output, gathered by the kernels' epilogues as they
/// store it: the batch statistics of a training-mode batch norm after the convolution, without a
/// separate sweep over the output (which at batch 128 streams from L3).
///
/// Tiles are summed in groups of `tilesPerSlot` in Float — a group is always inside one thread's
/// chunk of work — and the groups in Double in a fixed order, so the totals do not depend on the
/// thread count. The slot buffer is kept between runs.
public final class ConvMoments: @unchecked Sendable {
    /// Tiles per slot; chunks of work are multiples of it.
    static let tilesPerSlot = 16

    private var slots: UnsafeMutablePointer<Float>?
    private var capacity = 0
    private var used = 0, pairs = 0

    public init() {}

    deinit { slots?.deallocate() }

    /// Zeroed slots for a run of `tiles` tiles × `pairs` pairs of 8-channel blocks:
    /// [tiles / tilesPerSlot][pairs][Σ (16) | Σ² (16)].
    func begin(tiles: Int, pairs: Int) -> UnsafeMutablePointer<Float> {
        let count = (tiles + Self.tilesPerSlot - 1) / Self.tilesPerSlot * pairs * 32
        if count > capacity {
            slots?.deallocate()
            slots = .allocate(capacity: count)
            capacity = count
        }
        slots!.initialize(repeating: 0, count: count)
        (used, self.pairs) = (count, pairs)
        return slots!
    }

    /// Offset of the slot of `tile`'s pair `pair`, in floats.
    @inline(__always)
    static func slot(tile: Int, pair: Int, pairs: Int) -> Int { ((tile / tilesPerSlot) * pairs + pair) * 32 }

    /// A chunk of tiles rounded up to whole slots (unchanged without moments).
    static func align(_ chunk: Int, _ moments: ConvMoments?) -> Int {
        moments == nil ? chunk : (chunk + tilesPerSlot - 1) / tilesPerSlot * tilesPerSlot
    }

    /// Σy and Σy² per channel of the last run, [channels].
    public func totals(channels: Int) -> (sum: [Double], sumOfSquares: [Double]) {
        var sum = [Double](repeating: 0, count: channels), squares = sum
        guard let slots else { return (sum, squares) }
        var slot = UnsafePointer(slots)
        for _ in 0..<(used / (32 * Swift.max(pairs, 1))) {
            for j in 0..<pairs {
                for k in 0..<Swift.max(0, Swift.min(16, channels - 16 * j)) {
                    sum[16 * j + k] += Double(slot[k])
                    squares[16 * j + k] += Double(slot[16 + k])
                }
                slot += 32
            }
        }
        return (sum, squares)
    }
}
