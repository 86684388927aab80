import DynamicCore
import Foundation

/// Eval-mode execution of a `CIFARResNet` on NCHW8c buffers: BN folded into every convolution,
/// ReLU and the residual add fused into the second convolution's epilogue, activations kept
/// blocked from the stem to the pooling, and every buffer allocated once per input shape.
final class ResNetInferencePlan: @unchecked Sendable {
    struct Step {
        let unit1: ConvBNUnit, unit2: ConvBNUnit, projection: ConvBNUnit?
        let input: BlockedBuffer, mid: BlockedBuffer, shortcut: BlockedBuffer?, output: BlockedBuffer
    }

    let inputShape: [Int]
    let stemOutput: BlockedBuffer
    let steps: [Step]

    init(model m: CIFARResNet, n: Int, h: Int, w: Int) {
        inputShape = [n, 3, h, w]
        var pool = BufferPool()
        let stemShape = m.stem.conv.config.outputSize(h: h, w: w)
        var current = pool.take(BlockedShape(n: n, c: m.stem.conv.config.outChannels, h: stemShape.h, w: stemShape.w, halo: 1))
        stemOutput = current
        var steps: [Step] = []
        for stage in m.stages {
            for case let b as BasicBlock in stage.layers {
                let s = current.shape
                let o = b.conv1.config.outputSize(h: s.h, w: s.w)
                let shape = BlockedShape(n: n, c: b.conv1.config.outChannels, h: o.h, w: o.w, halo: 1)
                let mid = pool.take(shape)
                let shortcut = b.projection.map { _ in pool.take(shape) }
                let output = pool.take(shape)
                steps.append(Step(unit1: b.unit1, unit2: b.unit2, projection: b.projection, input: current, mid: mid,
                                  shortcut: shortcut, output: output))
                pool.give(current); pool.give(mid)
                if let sc = shortcut { pool.give(sc) }
                current = output
            }
        }
        self.steps = steps
    }

    /// Logits [N, classes] for x [N, 3, H, W] of the planned shape.
    func run(_ m: CIFARResNet, _ x: Tensor, threads: Int?) -> Tensor {
        m.stem.blocked().run(nchw: x, into: stemOutput, activation: .relu, threads: threads)
        for s in steps {
            s.unit1.blocked().run(s.input, into: s.mid, activation: .relu, threads: threads)
            if let p = s.projection, let sc = s.shortcut {
                p.blocked().run(s.input, into: sc, threads: threads)
            }
            s.unit2.blocked().run(s.mid, into: s.output, residual: s.shortcut ?? s.input, activation: .relu,
                                  threads: threads)
        }
        let pooled = BlockedOps.globalAvgPool(steps.last?.output ?? stemOutput)
        return m.linear(pooled)
    }
}

extension ResNetInferencePlan {
    /// Images per micro-batch: enough to fill tiles on small feature maps, few enough that a
    /// micro-batch's activations stay in L2 (depth-first through the network).
    static func microBatch(_ m: CIFARResNet, h: Int, w: Int) -> Int {
        let bytesPerImage = m.stem.conv.config.outChannels * (h + 2) * (w + 2) * 4
        let fitsL2 = (384 << 10) / bytesPerImage
        // The last stage works on (h / 2^(stages-1))² pixels; 96 of them fill 16 six-pixel tiles.
        let shrink = 1 << (m.stages.count - 1)
        let lastPixels = Swift.max(1, (h / shrink) * (w / shrink))
        return Swift.max(1, Swift.min(16, Swift.max(fitsL2, (96 + lastPixels - 1) / lastPixels)))
    }

    /// Runs x [N, 3, H, W]. Small batches go through one plan with threads inside each layer;
    /// larger ones are cut into micro-batches that workers run depth-first on their own plans
    /// (no synchronisation per layer). Each image's logits are the same either way.
    static func runBatched(_ m: CIFARResNet, _ x: Tensor, threads: Int,
                           plan: ([Int], Int) -> ResNetInferencePlan) -> Tensor {
        let n = x.shape[0], (h, w) = (x.shape[2], x.shape[3])
        let micro = microBatch(m, h: h, w: w)
        let chunks = (n + micro - 1) / micro
        if chunks < 2 * Swift.max(threads, 1) && n <= micro * Swift.max(threads, 1) {
            return plan(x.shape, 0).run(m, x, threads: threads)
        }
        // Each worker takes an equal contiguous share of the images (round-robin over micro-batches
        // left one worker a whole micro-batch more: 6 vs 5 at batch 64) and walks it in micro-batches.
        let workers = Swift.min(threads, chunks)
        let shares = Parallel.ranges(n, parts: workers)
        let ranges: [(worker: Int, images: Range<Int>)] = shares.enumerated().flatMap { wk, share in
            stride(from: share.lowerBound, to: share.upperBound, by: micro).map {
                (wk, $0..<Swift.min(share.upperBound, $0 + micro))
            }
        }
        // Plans (and packed weights) are built up front: workers only read them.
        var plans: [[Int]: ResNetInferencePlan] = [:]
        for r in ranges {
            let key = [r.images.count, 3, h, w, r.worker]
            if plans[key] == nil { plans[key] = plan(Array(key.prefix(4)), r.worker) }
        }
        m.prepareInference()
        var outputs = [Tensor?](repeating: nil, count: ranges.count)
        outputs.withUnsafeMutableBufferPointer { out in
            let slots = out.baseAddress!
            Parallel.forEach(workers, threads: workers) { wk in
                for (i, r) in ranges.enumerated() where r.worker == wk {
                    slots[i] = plans[[r.images.count, 3, h, w, wk]]!.run(m, x.batch(r.images), threads: 1)
                }
            }
        }
        return Tensor.concatBatch(outputs.map { $0! })
    }
}

/// Hands out zeroed buffers by shape and takes them back for reuse, so a plan needs only a few
/// buffers per shape however deep the network is.
struct BufferPool {
    private var free: [BlockedShape: [BlockedBuffer]] = [:]
    mutating func take(_ shape: BlockedShape) -> BlockedBuffer {
        if let b = free[shape]?.popLast() { return b }
        return BlockedBuffer(shape)
    }
    mutating func give(_ b: BlockedBuffer) { free[b.shape, default: []].append(b) }
}
