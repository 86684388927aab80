import DynamicCore
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import TestSupport
import XCTest

/// The NCHW8c training path (`BlockedBatchNorm`, the engine) against the
/// layer-by-layer NCHW path, which the gradient and PyTorch fixture tests pin down.
final class BlockedTrainingTests: XCTestCase {
    /// 12 channels (a partial second block), odd sizes, halo 1.
    func testBatchNormKernelsMatchNCHWReference() {
        var rng = SeededRNG(seed: 81)
        let (n, c, h, w) = (3, 12, 5, 7)
        let z = Tensor.normal([n, c, h, w], rng: &rng).map { 2 * $0 + 0.5 }
        let bz = BlockedBuffer(z, halo: 1)
        let stats = BlockedBatchNorm.statistics(bz)
        let ref = BatchNorm2d.batchStatistics(z)
        for ch in 0..<c {
            XCTAssertEqual(stats.mean[ch], ref.mean[ch], accuracy: 1e-5)
            XCTAssertEqual(stats.variance[ch], ref.variance[ch], accuracy: 1e-5 * ref.variance[ch])
        }
        let gamma = Tensor.uniform([c], low: 0.5, high: 1.5, rng: &rng), beta = Tensor.normal([c], rng: &rng)
        let invStd = ref.variance.map { 1 / ($0 + 1e-5).squareRoot() }
        let scale = (0..<c).map { gamma.scalars[$0] * invStd[$0] }
        let shift = (0..<c).map { beta.scalars[$0] - ref.mean[$0] * scale[$0] }
        let bnOut = Ops.channelAffine(z, scale: scale, shift: shift)

        // Forward: plain, + residual, + normalised residual, each with ReLU.
        let r = Tensor.normal([n, c, h, w], rng: &rng)
        let rs = Tensor.uniform([c], low: 0.5, high: 1.5, rng: &rng).scalars, rt = Tensor.normal([c], rng: &rng).scalars
        let y = BlockedBuffer(bz.shape)
        BlockedBatchNorm.normalize(bz, scale: scale, shift: shift, activation: .relu, into: y)
        _ = assertClose(y.toTensor(), Ops.activation(bnOut, .relu), tol: 1e-6, "normalize")
        BlockedBatchNorm.normalize(bz, scale: scale, shift: shift, residual: BlockedBuffer(r, halo: 1), activation: .relu,
                                   into: y)
        _ = assertClose(y.toTensor(), Ops.add(bnOut, r, activation: .relu), tol: 1e-6, "normalize + residual")
        BlockedBatchNorm.normalize(bz, scale: scale, shift: shift, residual: BlockedBuffer(r, halo: 1),
                                   residualScale: rs, residualShift: rt, activation: .relu, into: y)
        _ = assertClose(y.toTensor(), Ops.add(bnOut, Ops.channelAffine(r, scale: rs, shift: rt), activation: .relu),
                        tol: 1e-6, "normalize + normalised residual")
        XCTAssertTrue(y.haloIsZero, "normalize wrote into the halo")

        // Backward through ReLU and batch norm.
        let relu = Ops.activation(bnOut, .relu)
        let g = Tensor.normal([n, c, h, w], rng: &rng)
        let masked = Ops.activationBackward(g, input: relu, .relu)
        let expected = Ops.batchNormTrainingBackward(masked, input: z, mean: ref.mean, invStd: invStd, gamma: gamma)
        let bg = BlockedBuffer(g, halo: 1)
        let sums = BlockedBatchNorm.gradientSums(bg, relu: .output(BlockedBuffer(relu, halo: 1)), input: bz)
        _ = assertClose(bg.toTensor(), masked, tol: 0, "ReLU mask in place")
        let k = BlockedBatchNorm.backward(sumG: sums.sumG, sumGZ: sums.sumGZ, mean: ref.mean, invStd: invStd,
                                          gamma: gamma.scalars, count: n * h * w)
        _ = assertClose(Tensor(shape: [c], scalars: k.gamma), expected.gamma, tol: 1e-5, "dγ")
        _ = assertClose(Tensor(shape: [c], scalars: k.beta), expected.beta, tol: 1e-5, "dβ")
        let dz = BlockedBuffer(bz.shape)
        BlockedBatchNorm.applyBackward(k, gradient: bg, input: bz, into: dz)
        _ = assertClose(dz.toTensor(), expected.input, tol: 1e-4, "dz")
        XCTAssertTrue(dz.haloIsZero, "applyBackward wrote into the halo")

        // The same backward with the ReLU mask recomputed from z: equal sums and dz, g untouched.
        let unmasked = BlockedBuffer(g, halo: 1)
        let relu2 = BlockedBatchNorm.ReLU.recomputed(scale: scale, shift: shift)
        let sums2 = BlockedBatchNorm.gradientSums(unmasked, relu: relu2, input: bz)
        XCTAssertEqual(sums2.sumG, sums.sumG, "Σg with the recomputed mask")
        XCTAssertEqual(sums2.sumGZ, sums.sumGZ, "Σg·z with the recomputed mask")
        XCTAssertEqual(unmasked.toTensor().scalars, g.scalars, "the recomputed mask must leave g as it was")
        let dz2 = BlockedBuffer(bz.shape)
        BlockedBatchNorm.applyBackward(k, gradient: unmasked, input: bz, relu: relu2, into: dz2)
        XCTAssertEqual(dz2.toTensor().scalars, dz.toTensor().scalars, "dz with the recomputed mask")
        // In place (dz is g), as training runs the first batch norm of a block.
        BlockedBatchNorm.applyBackward(k, gradient: unmasked, input: bz, relu: relu2, into: unmasked)
        XCTAssertEqual(unmasked.toTensor().scalars, dz.toTensor().scalars, "dz in place")
    }

    func testGlobalPoolBackward() {
        var rng = SeededRNG(seed: 82)
        let g = Tensor.normal([2, 10], rng: &rng)
        let dx = BlockedBuffer(BlockedShape(n: 2, c: 10, h: 3, w: 5, halo: 1))
        BlockedOps.globalAvgPoolBackward(g, into: dx)
        _ = assertClose(dx.toTensor(), Ops.globalAvgPoolBackward(g, inputShape: [2, 10, 3, 5]), tol: 1e-7, "GAP backward")
        XCTAssertTrue(dx.haloIsZero)
    }

    /// One training step on the blocked plan and on the layer path from identical models:
    /// logits, input gradient, every parameter gradient and the running statistics agree.
    func testBlockedTrainingStepMatchesLayerPath() throws {
        let cases: [(String, () -> CIFARResNet, [Int])] = [
            // Channel counts that are not multiples of 8, both shortcut kinds, stride 2 twice.
            ("widths 4/12/16", { CIFARResNet(name: "odd", widths: [4, 12, 16], blocksPerStage: [2, 1, 2], classes: 5, seed: 3) },
             [3, 3, 10, 9]),
            ("resnet20", { CIFARResNet.depth(20, seed: 4) }, [2, 3, 32, 32]),
        ]
        for (label, make, shape) in cases {
            var rng = SeededRNG(seed: 83)
            let x = Tensor.normal(shape, rng: &rng)
            let blocked = make(), layered = make()
            for (_, p) in blocked.namedParameters() where p.isTrainable && p.value.rank == 1 {
                p.value = Tensor.uniform(p.value.shape, low: 0.5, high: 1.5, rng: &rng)   // non-trivial γ, β
            }
            try layered.loadStateDict(blocked.stateDict())
            layered.usesEngine = false
            var outputs: [(Tensor, Tensor)] = []
            for m in [blocked, layered] {
                m.train()
                m.zeroGrad()
                let logits = m(x)
                let seed = Loss.crossEntropy(logits: logits, labels: (0..<shape[0]).map { $0 % 3 }).gradient
                outputs.append((logits, m.backward(seed)))
            }
            // Logits, input gradient and running statistics: max |a − b| / max |b| ≤ 1e-5.
            // Parameter gradients: ≤ 1e-4, and ‖a − b‖ / ‖b‖ ≤ 3e-5 — two Float summation orders
            // flip the ReLU mask of pre-activations within rounding of 0 (a single block agrees
            // to 1e-5, `testSingleBlockMatchesLayerPathClosely`), and the batch-norm bias gradients
            // are sums that cancel.
            var worst: (norm: Double, max: Float) = (0, 0)
            func compare(_ a: Tensor, _ b: Tensor, _ what: String, tol: Float = 1e-5, normTol: Double = 1e-5) {
                let e = normRelativeError(a, b)
                XCTAssertLessThanOrEqual(e, normTol, "\(label) \(what): ‖a − b‖/‖b‖")
                worst = (max(worst.norm, e), max(worst.max, assertClose(a, b, tol: tol, "\(label) \(what)")))
            }
            compare(outputs[0].0, outputs[1].0, "logits")
            compare(outputs[0].1, outputs[1].1, "input gradient")
            let other = Dictionary(uniqueKeysWithValues: layered.namedParameters())
            for (key, p) in blocked.namedParameters() {
                let q = other[key]!
                if p.isTrainable {
                    guard let g = p.grad, let h = q.grad else { XCTFail("\(label) \(key): no gradient"); continue }
                    compare(g, h, "\(key) gradient", tol: 1e-4, normTol: 3e-5)
                } else {
                    compare(p.value, q.value, key)
                }
            }
            print("\(label): engine vs layer path, max ‖a − b‖/‖b‖ \(worst.norm), max elementwise \(worst.max)")
        }
    }

    /// Results do not depend on the thread count (bit for bit), and repeated steps reuse the plan.
    func testBlockedTrainingIsThreadCountIndependent() {
        var rng = SeededRNG(seed: 84)
        let x = Tensor.normal([4, 3, 12, 12], rng: &rng)
        var results: [[String: [Float]]] = []
        for threads in [1, 2, 3] {
            let m = CIFARResNet(name: "t", widths: [8, 16], blocksPerStage: [1, 2], classes: 4, seed: 9)
            m.setThreads(threads)
            let opt = SGD(groups: [ParameterGroup(m.trainableParameters, learningRate: 0.1)], momentum: 0.9)
            for _ in 0..<3 { opt.trainStep(m, images: x, labels: [0, 1, 2, 3]) }
            results.append(m.stateDict().mapValues(\.scalars))
        }
        XCTAssertEqual(results[0], results[1])
        XCTAssertEqual(results[0], results[2])
    }

    private func normRelativeError(_ a: Tensor, _ b: Tensor) -> Double {
        let d = zip(a.scalars, b.scalars).reduce(0.0) { $0 + Double($1.0 - $1.1) * Double($1.0 - $1.1) }
        let n = b.scalars.reduce(0.0) { $0 + Double($1) * Double($1) }
        return n == 0 ? d.squareRoot() : (d / n).squareRoot()
    }

}

extension BlockedTrainingTests {
    /// One residual block of ResNet-20's last stage on the engine and on the layer path: every
    /// gradient within 1e-5 — the larger differences of the whole network come from depth.
    func testSingleBlockMatchesLayerPathClosely() {
        var rng = SeededRNG(seed: 85)
        let block = BasicBlock(64, 64, stride: 1, rng: &rng)
        for bn in [block.bn1, block.bn2] {
            bn.weight.value = Tensor.uniform([64], low: 0.5, high: 1.5, rng: &rng)
            bn.bias.value = Tensor.normal([64], rng: &rng)
        }
        let x = Tensor.normal([2, 64, 8, 8], rng: &rng).map { max($0, 0) }
        let r = Tensor.normal([2, 64, 8, 8], rng: &rng)
        let params = block.namedParameters().map(\.1).filter(\.isTrainable)
        let e = Engine(threads: 2)
        e.begin(batch: 2, recording: true)
        let input = e.input(x, requiresGradient: true)
        let out = block(input).flattened()
        e.backward(out, gradient: r.reshaped(out.shape))
        let engineGrads = params.map { $0.grad! }
        params.forEach { $0.grad = nil }
        let y = block(x)
        _ = assertClose(out.value.reshaped(y.shape), y, tol: 1e-5, "block forward")
        _ = assertClose(input.gradient!, block.backward(r), tol: 1e-5, "block input gradient")
        for (a, p) in zip(engineGrads, params) { _ = assertClose(a, p.grad!, tol: 1e-5, "block parameter gradient") }
    }
}
