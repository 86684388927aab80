/// Per-channel sums gathered by a convolution's kernel epilogues as they store the output, so
/// that a batch norm next to the convolution needs no sweep of its own over a buffer that, at
/// batch 128, streams from L3:
/// - `.outputMoments`: Σy and Σy² of the stored output y — the batch statistics of a
///   training-mode batch norm after the convolution (forward);
/// - `.gradientSums`: the output is g = dL/d(a batch norm's output), e.g. an input gradient;
///   the epilogue masks it by the ReLU that followed that batch norm (stored masked) and sums
///   Σg and Σg·z against the batch norm's input z — what `BlockedBatchNorm.gradientSums`
///   computes in a pass of its own.
///
/// Tiles are summed in groups of `tilesPerSlot` in Float — a group is always inside one thread's
/// chunk of work — and the groups in Double in a fixed order, so the totals do not depend on the
/// thread count. Buffers are kept between runs.
public final class ConvMoments: @unchecked Sendable {
    /// What the epilogues sum.
    public enum Kind {
        case outputMoments
        /// z: the batch norm's input, shaped as the output; relu as in `BlockedBatchNorm.gradientSums`.
        case gradientSums(input: BlockedBuffer, relu: BlockedBatchNorm.ReLU?)
    }

    /// Tiles per slot; chunks of work are multiples of it.
    static let tilesPerSlot = 16

    public var kind: Kind

    private var slots: UnsafeMutablePointer<Float>?
    private var capacity = 0
    private var used = 0, pairs = 0
    /// `.recomputed` ReLU: scale and shift padded to whole pairs of blocks.
    private var maskAffine: UnsafeMutablePointer<Float>?
    private var maskAffineCapacity = 0

    public init(_ kind: Kind = .outputMoments) { self.kind = kind }

    deinit {
        slots?.deallocate()
        maskAffine?.deallocate()
    }

    /// Zeroed slots for a run of `tiles` tiles × `pairs` pairs of 8-channel blocks writing
    /// `output` ([tiles / tilesPerSlot][pairs][Σ (16) | Σ·(y or z) (16)]), and what every tile's
    /// epilogue needs, before its offsets.
    func begin(tiles: Int, pairs: Int, output: BlockedShape) -> EpilogueSums {
        let count = (tiles + Self.tilesPerSlot - 1) / Self.tilesPerSlot * pairs * 32
        if count > capacity {
            slots?.deallocate()
            slots = .allocate(capacity: count)
            capacity = count
        }
        slots!.initialize(repeating: 0, count: count)
        (used, self.pairs) = (count, pairs)
        var sums = EpilogueSums(slot: slots!, z: nil, reluOutput: nil, maskScale: nil, maskShift: nil)
        guard case .gradientSums(let z, let relu) = kind else { return sums }
        precondition(z.shape == output, "gradient sums: batch-norm input \(z.shape) must match the output \(output)")
        sums.z = UnsafePointer(z.pointer)
        switch relu {
        case .output(let y)?:
            precondition(y.shape == output, "gradient sums: ReLU output \(y.shape) must match the output \(output)")
            sums.reluOutput = UnsafePointer(y.pointer)
        case .recomputed(let scale, let shift)?:
            precondition(scale.count == output.c && shift.count == output.c, "gradient sums: scale, shift must be [\(output.c)]")
            if 32 * pairs > maskAffineCapacity {
                maskAffine?.deallocate()
                maskAffine = .allocate(capacity: 32 * pairs)
                maskAffineCapacity = 32 * pairs
            }
            let p = maskAffine!
            p.initialize(repeating: 0, count: 32 * pairs)
            for ch in 0..<output.c { p[ch] = scale[ch]; p[16 * pairs + ch] = shift[ch] }
            sums.maskScale = UnsafePointer(p)
            sums.maskShift = UnsafePointer(p + 16 * pairs)
        case nil:
            break
        }
        return sums
    }

    /// Σ and Σ·(y or z) per channel of the last run, [channels]: (Σy, Σy²) for `.outputMoments`,
    /// (Σg, Σg·z) for `.gradientSums`.
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

    /// A chunk of tiles rounded up to whole slots (unchanged without moments).
    static func align(_ chunk: Int, _ moments: ConvMoments?) -> Int {
        moments == nil ? chunk : (chunk + tilesPerSlot - 1) / tilesPerSlot * tilesPerSlot
    }
}

/// What one kernel epilogue adds its sums to (see `ConvMoments`): pointers for one tile and one
/// pair of output blocks, the buffers' at the same offsets as the output's.
struct EpilogueSums {
    /// [Σ (16) | Σ·(y or z) (16)].
    var slot: UnsafeMutablePointer<Float>
    /// Gradient sums: the batch norm's input (nil: output moments).
    var z: UnsafePointer<Float>?
    /// Gradient sums masked by a stored ReLU output.
    var reluOutput: UnsafePointer<Float>?
    /// Gradient sums masked by z·scale + shift > 0 (16 channels each).
    var maskScale: UnsafePointer<Float>?, maskShift: UnsafePointer<Float>?

    /// The sums of `tile`'s pair `pair` (of `pairs`) whose output starts `offset` floats on.
    @inline(__always)
    func at(tile: Int, pair: Int, pairs: Int, offset: Int) -> EpilogueSums {
        EpilogueSums(slot: slot + ((tile / ConvMoments.tilesPerSlot) * pairs + pair) * 32, z: z.map { $0 + offset },
                     reluOutput: reluOutput.map { $0 + offset }, maskScale: maskScale.map { $0 + 16 * pair },
                     maskShift: maskShift.map { $0 + 16 * pair })
    }

    /// The next pair of blocks of the same tile (the wide kernels' second accumulator set).
    @inline(__always)
    func nextPair(blockStride: Int) -> EpilogueSums {
        EpilogueSums(slot: slot + 32, z: z.map { $0 + 2 * blockStride }, reluOutput: reluOutput.map { $0 + 2 * blockStride },
                     maskScale: maskScale.map { $0 + 16 }, maskShift: maskShift.map { $0 + 16 })
    }
}
