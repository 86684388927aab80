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
