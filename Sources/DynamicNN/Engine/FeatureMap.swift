import DynamicCore

/// An activation [N, C, H, W] on the engine, kept channel-blocked (NCHW8c) between ops.
///
/// Its value may still be pending: the network input stays NCHW until an op needs it blocked
/// (the RGB stem reads it directly), and a training-mode batch norm with nothing after it
/// keeps only its input z and the per-channel scale and shift, so that an op that adds it
/// (a projection shortcut into a residual sum) normalises it on the fly. `blocked(halo:)`
/// materialises either.
public final class FeatureMap {
    public let engine: Engine
    public let n: Int, c: Int, h: Int, w: Int

    enum Storage {
        case blocked(PooledBuffer)
        case nchw(Tensor)
        /// y = z·scale + shift per channel (a training-mode batch norm's output), not stored yet.
        case normalized(z: PooledBuffer, scale: [Float], shift: [Float])
        /// Images `rows` of a larger buffer, not gathered yet (a sub-batch outside a recording):
        /// convolutions read them in place, other ops gather them first.
        case rows(PooledBuffer, [Int])
        /// Its buffer went to another map (`replacing(rows:with:)`).
        case consumed
    }
    var storage: Storage
    /// A copy with a wider halo, for convolutions whose padding exceeds 1.
    var wide: PooledBuffer?
    /// The engine batch's sample index of each of the N rows (nil: rows 0..<N of the batch).
    public let samples: [Int]?

    /// dL/d(this), halo 1, once some op's backward contributed to it.
    var grad: PooledBuffer?
    /// Whether backward computes dL/d(this): true for every op output while recording.
    public internal(set) var requiresGradient = false
    /// Recorded ops that read this map, and how many of their backwards have contributed.
    var uses = 0, contributions = 0
    /// The recording (`Engine.generation`) the counts belong to.
    private var generation = 0
    /// The recorded op that wrote this map, when it can take the batch-norm gradient sums that
    /// the last contribution to `grad` gathers as it is stored (`ConvMoments.gradientSums`).
    weak var producer: GradientSumsTaker?

    init(engine: Engine, n: Int, c: Int, h: Int, w: Int, storage: Storage, samples: [Int]?) {
        self.engine = engine
        (self.n, self.c, self.h, self.w) = (n, c, h, w)
        self.storage = storage
        self.samples = samples
        precondition(samples.map { $0.count == n } != false, "one sample index per row")
    }

    public var shape: [Int] { [n, c, h, w] }

    /// Same N, C, H, W and rows as `other` (no arrays built: ops check this on every call).
    func matches(_ other: FeatureMap) -> Bool {
        (n, c, h, w) == (other.n, other.c, other.h, other.w) && samples == other.samples
    }

    /// The blocked shape of this map with a given halo.
    func blockedShape(halo: Int) -> BlockedShape { BlockedShape(n: n, c: c, h: h, w: w, halo: halo) }

    /// Shape of the gradient buffer (always halo 1, as every batch-norm input z).
    var gradientShape: BlockedShape { blockedShape(halo: 1) }

    /// The value as an NCHW8c buffer whose halo is at least `halo`, materialised if pending.
    /// The map's own buffer has halo 1 (what ops that pair buffers expect); a convolution with
    /// more padding gets a wider copy, kept beside it for the map's other wide readers.
    public func blocked(halo: Int = 1) -> PooledBuffer {
        if halo > 1 {
            if let wide, wide.shape.halo >= halo { return wide }
            let b = engine.buffer(blockedShape(halo: halo))
            if case .nchw(let x) = storage {
                b.buffer.load(x)
            } else {
                BlockedOps.copyInterior(blocked().buffer, into: b.buffer, threads: engine.threads)
            }
            wide = b
            return b
        }
        switch storage {
        case .blocked(let b):
            return b
        case .nchw(let x):
            let b = engine.buffer(blockedShape(halo: 1))
            b.buffer.load(x)
            storage = .blocked(b)
            return b
        case .normalized(let z, let scale, let shift):
            let y = engine.buffer(z.shape)
            BlockedBatchNorm.normalize(z.buffer, scale: scale, shift: shift, activation: .identity, into: y.buffer,
                                       threads: engine.threads)
            storage = .blocked(y)
            return y
        case .rows(let source, let rows):
            let y = engine.buffer(blockedShape(halo: source.shape.halo))
            BlockedOps.copyImages(source.buffer, rows: rows, into: y.buffer, threads: engine.threads)
            storage = .blocked(y)
            return y
        case .consumed:
            preconditionFailure("this \(shape) map was consumed by replacing(rows:with:); read the map it returned")
        }
    }

    /// The buffer a convolution reads, and which of its images (nil: all, in order): a sub-batch
    /// not gathered yet is read in place (`BlockedConv2D.run(_:inputImages:…)`).
    func convolutionInput(halo: Int) -> (buffer: PooledBuffer, images: [Int]?) {
        if case .rows(let source, let rows) = storage, source.shape.halo >= halo, !engine.isRecording { return (source, rows) }
        return (blocked(halo: halo), nil)
    }

    /// The value as an NCHW tensor [N, C, H, W].
    public func toTensor() -> Tensor {
        if case .nchw(let x) = storage { return x }
        return blocked().buffer.toTensor()
    }

    /// dL/d(this) [N, C, H, W] after `Engine.backward`, for maps that no op wrote (inputs);
    /// nil when nothing reached it. Intermediate maps hand their gradient on during backward.
    public var gradient: Tensor? { grad?.buffer.toTensor() }

    // MARK: - Backward bookkeeping

    /// Notes a recorded op reading this map. A map kept from an earlier recording starts afresh.
    func markUse() {
        guard engine.isRecording else { return }
        if generation != engine.generation {
            (generation, uses, contributions, grad) = (engine.generation, 0, 0, nil)
        }
        uses += 1
    }

    /// True when the contribution about to be made is the last one `grad` will get.
    var isLastContribution: Bool { contributions + 1 >= uses }

    /// Adds g (a buffer of `gradientShape`) to the gradient; the first contribution takes g
    /// itself (no copy), so the caller must not write g afterwards. Counts as done, and drops g,
    /// when the map needs no gradient.
    func accumulateGradient(_ g: PooledBuffer) {
        precondition(g.shape == gradientShape, "gradient \(g.shape) does not match \(gradientShape)")
        contributions += 1
        guard requiresGradient else { return }
        if let grad {
            BlockedOps.addInPlace(grad.buffer, g.buffer, threads: engine.threads)
        } else {
            grad = g
        }
    }

    /// A backward that contributes nothing (its output got no gradient) still counts as done.
    func skipContribution() { contributions += 1 }
}

/// A plain tensor on the engine (pooled features, gates, logits): [N, …] with N rows of the
/// engine's batch, on the gradient tape like the feature maps.
public final class Variable {
    public let engine: Engine
    public let value: Tensor
    /// The engine batch's sample index of each row (nil: rows 0..<N of the batch).
    public let samples: [Int]?
    /// dL/d(this) after `Engine.backward` (nil when nothing reached it).
    public internal(set) var gradient: Tensor?
    public internal(set) var requiresGradient = false

    init(engine: Engine, value: Tensor, samples: [Int]?) {
        self.engine = engine
        self.value = value
        self.samples = samples
    }

    public var shape: [Int] { value.shape }

    func accumulateGradient(_ g: Tensor) {
        if gradient == nil { gradient = g } else { gradient! += g }
    }

    /// Records `node` as the op that wrote this variable (while recording).
    func recorded(_ node: @autoclosure () -> TapeNode) -> Variable {
        guard engine.isRecording else { return self }
        requiresGradient = true
        engine.record(node())
        return self
    }
}

/// A recorded op that takes its batch-norm gradient sums from the op that writes its output
/// gradient last (see `FeatureMap.producer`).
protocol GradientSumsTaker: AnyObject {
    /// The sums to gather over the output gradient as it is stored, or nil.
    func gradientSums(for gradient: BlockedShape) -> ConvMoments?
    /// Called with the totals after the gathering run.
    func tookGradientSums(_ sums: ConvMoments)
}

extension FeatureMap {
    /// Adds a backward's contribution to the gradient: `write(dst, accumulate)` either writes the
    /// whole interior of a fresh buffer (accumulate false) or adds onto the gradient so far.
    func contributeGradient(_ write: (_ dst: BlockedBuffer, _ accumulate: Bool) -> Void) {
        defer { contributions += 1 }
        guard requiresGradient else { return }
        if let grad {
            write(grad.buffer, true)
        } else {
            let g = engine.buffer(gradientShape)
            write(g.buffer, false)
            grad = g
        }
    }

    /// A new map on the same engine and rows.
    func derived(c: Int, h: Int, w: Int, _ buffer: PooledBuffer) -> FeatureMap {
        FeatureMap(engine: engine, n: n, c: c, h: h, w: w, storage: .blocked(buffer), samples: samples)
    }

    /// Records `node` as the op that wrote `output` from `inputs` (while recording).
    func recorded(_ node: @autoclosure () -> TapeNode, inputs: [FeatureMap]) -> FeatureMap {
        guard engine.isRecording else { return self }
        for x in inputs { x.markUse() }
        requiresGradient = true
        engine.record(node())
        return self
    }
}
