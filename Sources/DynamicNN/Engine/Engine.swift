import DynamicCore
import Foundation

/// The one execution engine every network runs on (DESIGN §1): eager, on NCHW8c activations.
///
/// A model's forward is ordinary Swift that calls ops on `FeatureMap`s (NCHW8c activations)
/// and `Variable`s (plain tensors such as pooled features, gates and logits); control flow may
/// depend on the data. Each op runs at once on the blocked kernels, with whatever follows it
/// fused where it can be (batch norm, activation, residual). While recording, each op also
/// appends a node to a gradient tape, and `backward` walks the tape in reverse. Buffers come
/// from a pool and go back when the last value that holds them goes, so a training step reuses
/// the previous step's buffers without a plan; packed weights are cached per parameter version
/// by the layers themselves. Every op charges what it ran to the samples it ran on
/// (`sampleCosts`).
///
/// One engine runs one forward at a time; its ops use `threads` threads inside each kernel.
public final class Engine: @unchecked Sendable {
    /// Threads inside each op.
    public var threads: Int
    /// The convolution kernels the ops run on.
    public let kernels: KernelOptions
    let pool = BufferPool()
    /// True between `begin(recording: true)` and the end of `backward`.
    public private(set) var isRecording = false
    private var tape: [TapeNode] = []
    /// What each sample of the current batch cost so far (see `ComputeCost`), [batch].
    public private(set) var sampleCosts: [ComputeCost] = []
    /// Counts `begin` calls, so values kept from an earlier recording know their counts are stale.
    private(set) var generation = 0
    /// Single-threaded engines for `runMicroBatches`, one per worker.
    private var workers: [Engine] = []

    public init(threads: Int? = nil, kernels: KernelOptions = .fastest) {
        self.threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        self.kernels = kernels
    }

    /// Starts a forward over a batch of `batch` samples: clears the tape and the costs.
    /// `recording`: keep what `backward` needs (a training step).
    public func begin(batch: Int, recording: Bool) {
        tape.removeAll(keepingCapacity: true)
        isRecording = recording
        generation += 1
        sampleCosts = [ComputeCost](repeating: .zero, count: batch)
    }

    /// The network input x [N, C, H, W] as a feature map of the batch begun (N samples).
    /// It is packed to NCHW8c when an op first needs it (the RGB stem reads it as it is).
    public func input(_ x: Tensor, requiresGradient: Bool = false) -> FeatureMap {
        precondition(x.rank == 4, "engine input must be [N, C, H, W], got \(x.shape)")
        precondition(x.shape[0] == sampleCosts.count, "input batch \(x.shape[0]) is not the batch begun (\(sampleCosts.count))")
        let m = FeatureMap(engine: self, n: x.shape[0], c: x.shape[1], h: x.shape[2], w: x.shape[3], storage: .nchw(x),
                           samples: nil)
        m.requiresGradient = requiresGradient
        return m
    }

    /// A zeroed (or uninitialised-interior) buffer of this engine's pool.
    func buffer(_ shape: BlockedShape) -> PooledBuffer { pool.take(shape) }

    func record(_ node: TapeNode) {
        precondition(isRecording, "recording an op outside a recording forward")
        tape.append(node)
    }

    /// Adds `cost` to every sample in `samples` (nil: the whole batch).
    func charge(_ cost: ComputeCost, samples: [Int]?) {
        if let samples {
            for s in samples { sampleCosts[s] += cost }
        } else {
            for s in sampleCosts.indices { sampleCosts[s] += cost }
        }
    }

    /// Backward of the recorded forward: each output's gradient is seeded with the tensor given
    /// (dL/d(output), its shape), then every node runs in reverse order, accumulating parameter
    /// gradients into `Parameter.grad` and input gradients into the values that require them.
    /// Ends the recording: the tape and what it kept are released.
    public func backward(_ seeds: [(Variable, Tensor)]) {
        precondition(isRecording, "Engine.backward without a recording forward")
        for (v, g) in seeds {
            precondition(g.shape == v.value.shape, "seed gradient \(g.shape) does not match its output \(v.value.shape)")
            v.accumulateGradient(g)
        }
        while let node = tape.popLast() { node.backward() }
        isRecording = false
    }

    /// `backward` from one output.
    public func backward(_ output: Variable, gradient: Tensor) { backward([(output, gradient)]) }

    /// Runs `body` on micro-batches of x [N, …], spread over `threads` workers that each walk
    /// their own contiguous share of the images depth-first (no synchronisation per layer),
    /// each on its own single-threaded engine; returns the output [N, …] in order. With
    /// `microBatch ≥ N / threads` (small batches) it runs `body` once on this engine with the
    /// threads inside each op. Inference only: the layers must be in eval mode (training-mode
    /// batch norms would take statistics per micro-batch and race on the running ones).
    public func runMicroBatches(_ x: Tensor, microBatch: Int, _ body: (FeatureMap) -> Variable) -> Tensor {
        runMicroBatches(x, microBatch: microBatch, outputs: { [body($0)] })[0]
    }

    /// `runMicroBatches` for a network with several outputs (one per exit): each output [N, …].
    public func runMicroBatches(_ x: Tensor, microBatch: Int, outputs body: (FeatureMap) -> [Variable]) -> [Tensor] {
        let parts = runMicroBatches(x, microBatch: microBatch, each: { body($0).map(\.value) })
        return parts[0].indices.map { k in parts.count == 1 ? parts[0][k] : Tensor.concatBatch(parts.map { $0[k] }) }
    }

    /// Runs `body` on micro-batches of x [N, …] as `runMicroBatches` does and returns its result
    /// for each micro-batch, in input order (one result when the batch ran whole on this
    /// engine). `sampleCosts` holds every sample's cost afterwards. Each micro-batch is processed
    /// on its own: a network that drops samples (early exit) shrinks each one separately.
    public func runMicroBatches<T>(_ x: Tensor, microBatch: Int, each body: (FeatureMap) -> T) -> [T] {
        let n = x.shape[0], micro = Swift.max(1, microBatch)
        let chunks = (n + micro - 1) / micro
        if chunks < 2 * threads && n <= micro * threads {
            begin(batch: n, recording: false)
            return [body(input(x))]
        }
        tape.removeAll()      // an unfinished recording's activations go back to the pool
        isRecording = false
        // Equal contiguous shares per worker (round-robin over micro-batches left one worker a
        // whole micro-batch more: 6 vs 5 at batch 64), each walked in micro-batches.
        let count = Swift.min(threads, chunks)
        while workers.count < count { workers.append(Engine(threads: 1, kernels: kernels)) }
        let shares = Parallel.ranges(n, parts: count)
        var outputs = [[T]](repeating: [], count: count)
        var costs = [[ComputeCost]](repeating: [], count: count)
        outputs.withUnsafeMutableBufferPointer { out in
            costs.withUnsafeMutableBufferPointer { cost in
                let (slots, costSlots, workers) = (out.baseAddress!, cost.baseAddress!, self.workers)
                Parallel.forEach(count, threads: count) { wk in
                    let e = workers[wk]
                    var parts: [T] = []
                    var spent: [ComputeCost] = []
                    for start in stride(from: shares[wk].lowerBound, to: shares[wk].upperBound, by: micro) {
                        let images = start..<Swift.min(shares[wk].upperBound, start + micro)
                        e.begin(batch: images.count, recording: false)
                        parts.append(body(e.input(x.batch(images))))
                        spent += e.sampleCosts
                    }
                    slots[wk] = parts
                    costSlots[wk] = spent
                }
            }
        }
        sampleCosts = costs.flatMap { $0 }
        return outputs.flatMap { $0 }
    }
}

/// One recorded op: its backward reads its outputs' gradients (complete when it runs, since
/// every later op has run its backward) and adds into its inputs' gradients.
protocol TapeNode: AnyObject {
    func backward()
}
