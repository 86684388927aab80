import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import TestSupport
import XCTest

/// Every engine op's backward against central differences of L = Σ f·r (r a fixed random
/// projection), for its feature-map inputs, vector inputs and parameters.
final class EngineOpTests: XCTestCase {
    func check(maps: [Tensor], vectors: [Tensor] = [], parameters: [Parameter] = [], h: Float, tol: Float,
               threads: Int = 2, _ label: String, file: StaticString = #filePath, line: UInt = #line,
               _ f: @escaping ([FeatureMap], [Variable]) -> Variable) {
        let e = Engine(threads: threads)
        func run(_ ms: [Tensor], _ vs: [Tensor], record: Bool) -> (Variable, [FeatureMap], [Variable]) {
            e.begin(batch: ms.first?.shape[0] ?? vs[0].shape[0], recording: record)
            let fm = ms.map { e.input($0, requiresGradient: true) }
            let vv = vs.map { v -> Variable in
                let x = e.variable(v)
                x.requiresGradient = true
                return x
            }
            return (f(fm, vv), fm, vv)
        }
        var rng = SeededRNG(seed: 7)
        let r = Tensor.normal(run(maps, vectors, record: false).0.shape, rng: &rng)
        let loss = { (ms: [Tensor], vs: [Tensor]) in FiniteDifferences.projection(run(ms, vs, record: false).0.value, r) }
        parameters.forEach { $0.grad = nil }
        let (out, fm, vv) = run(maps, vectors, record: true)
        e.backward(out, gradient: r)
        for (i, m) in fm.enumerated() {
            let numeric = FiniteDifferences.gradient(of: maps[i], h: h) { x in var ms = maps; ms[i] = x; return loss(ms, vectors) }
            guard let g = m.gradient else { XCTFail("\(label): map \(i) got no gradient", file: file, line: line); continue }
            assertClose(g, numeric, tol: tol, "\(label) map \(i)", file: file, line: line)
        }
        for (i, v) in vv.enumerated() {
            let numeric = FiniteDifferences.gradient(of: vectors[i], h: h) { x in var vs = vectors; vs[i] = x; return loss(maps, vs) }
            guard let g = v.gradient else { XCTFail("\(label): vector \(i) got no gradient", file: file, line: line); continue }
            assertClose(g, numeric, tol: tol, "\(label) vector \(i)", file: file, line: line)
        }
        for (i, p) in parameters.enumerated() {
            guard let g = p.grad else { XCTFail("\(label): parameter \(i) got no gradient", file: file, line: line); continue }
            assertClose(g, FiniteDifferences.gradient(of: p, h: h) { loss(maps, vectors) }, tol: tol, "\(label) parameter \(i)",
                        file: file, line: line)
        }
    }

    private func nonTrivial(_ bn: BatchNorm2d, rng: inout SeededRNG) {
        bn.weight.value = Tensor.uniform(bn.weight.shape, low: 0.5, high: 1.5, rng: &rng)
        bn.bias.value = Tensor.normal(bn.bias.shape, rng: &rng)
    }

    func testConvBNUnitTraining() {
        var rng = SeededRNG(seed: 1)
        let cases: [(String, Conv2DConfig, Activation)] = [
            ("3x3 s1 relu", Conv2DConfig(inChannels: 5, outChannels: 12, kernelSize: 3, padding: 1), .relu),
            ("3x3 s2 identity", Conv2DConfig(inChannels: 9, outChannels: 7, kernelSize: 3, stride: 2, padding: 1), .identity),
            ("1x1 relu1", Conv2DConfig(inChannels: 3, outChannels: 10, kernelSize: 1), .relu1),
        ]
        for (label, cfg, act) in cases {
            let unit = ConvBNUnit(conv: Conv2d(cfg, bias: false, rng: &rng), bn: BatchNorm2d(cfg.outChannels), activation: act)
            nonTrivial(unit.bn, rng: &rng)
            let x = Tensor.normal([3, cfg.inChannels, 6, 5], rng: &rng)
            check(maps: [x], parameters: [unit.conv.weight, unit.bn.weight, unit.bn.bias], h: 1e-3, tol: 2e-2, label) { m, _ in
                unit(m[0]).flattened()
            }
        }
    }

    /// A residual block: identity and projection (its batch norm pending, fused into the sum) shortcuts.
    func testResidualBlockTraining() {
        var rng = SeededRNG(seed: 2)
        for (cin, cout, stride) in [(6, 6, 1), (5, 12, 2)] {
            let block = BasicBlock(cin, cout, stride: stride, rng: &rng)
            for case let bn as BatchNorm2d in [block.bn1, block.bn2] + block.shortcut.layers.compactMap({ $0 as? BatchNorm2d }) {
                nonTrivial(bn, rng: &rng)
            }
            let x = Tensor.normal([2, cin, 6, 6], rng: &rng)
            let params = block.namedParameters().map(\.1).filter(\.isTrainable)
            check(maps: [x], parameters: params, h: 1e-3, tol: 2e-2, "block \(cin)→\(cout) s\(stride)") { m, _ in block(m[0]).flattened() }
        }
    }

    /// torchvision's bottleneck (1×1, 3×3 with the stride, 1×1 at 4× width), both shortcut
    /// kinds, against the layer path (its narrow batch norms put many ReLU inputs within a
    /// difference step of the kink, so central differences are no use here).
    func testBottleneckMatchesLayerPath() {
        var rng = SeededRNG(seed: 13)
        for (cin, width, stride) in [(12, 3, 1), (6, 4, 2)] {
            let block = Bottleneck(cin, width: width, stride: stride, rng: &rng)
            for bn in [block.bn1, block.bn2, block.bn3] { nonTrivial(bn, rng: &rng) }
            let x = Tensor.normal([2, cin, 5, 6], rng: &rng)
            let e = Engine(threads: 2)
            e.begin(batch: 2, recording: true)
            let input = e.input(x, requiresGradient: true)
            let out = block(input).flattened()
            let r = Tensor.normal(out.shape, rng: &rng)
            e.backward(out, gradient: r)
            let params = block.namedParameters().map(\.1).filter(\.isTrainable)
            let engineGrads = params.map { $0.grad! }
            params.forEach { $0.grad = nil }
            let z = block.unit3(block.unit2(block.unit1(x)))
            let shortcut = block.projection.map { $0(x) } ?? x
            let y = Ops.add(z, shortcut, activation: .relu)
            let label = "bottleneck \(cin)→\(4 * width) s\(stride)"
            assertClose(out.value.reshaped(y.shape), y, tol: 1e-5, "\(label) forward")
            let g = Ops.activationBackward(r.reshaped(y.shape), input: z + shortcut, .relu)
            var dx = block.unit1.backward(block.unit2.backward(block.unit3.backward(g)))
            dx += block.projection?.backward(g) ?? g
            assertClose(input.gradient!, dx, tol: 1e-5, "\(label) input gradient")
            for (a, p) in zip(engineGrads, params) { assertClose(a, p.grad!, tol: 1e-5, "\(label) parameter gradient") }
        }
    }

    func testBatchNormAlone() {
        var rng = SeededRNG(seed: 3)
        let bn = BatchNorm2d(11)
        nonTrivial(bn, rng: &rng)
        let x = Tensor.normal([3, 11, 4, 5], rng: &rng)
        check(maps: [x], parameters: [bn.weight, bn.bias], h: 1e-2, tol: 2e-2, "bn2d") { m, _ in bn(m[0]).flattened() }
        let bn1 = BatchNorm2d(6)
        nonTrivial(bn1, rng: &rng)
        check(maps: [], vectors: [Tensor.normal([5, 6], rng: &rng)], parameters: [bn1.weight, bn1.bias], h: 1e-2, tol: 2e-2,
              "bn1d") { bn1($1[0]) }
    }

    func testPlainConvolution() {
        var rng = SeededRNG(seed: 4)
        for (label, cfg) in [("3x3", Conv2DConfig(inChannels: 4, outChannels: 9, kernelSize: 3, padding: 1)),
                             ("1x1 s2", Conv2DConfig(inChannels: 10, outChannels: 3, kernelSize: 1, stride: 2)),
                             ("5x5 p2", Conv2DConfig(inChannels: 3, outChannels: 5, kernelSize: 5, padding: 2)),
                             ("7x7 s2 p3", Conv2DConfig(inChannels: 3, outChannels: 8, kernelSize: 7, stride: 2, padding: 3)),
                             ("3x3 dilation 2", Conv2DConfig(inChannels: 6, outChannels: 4, kernelSize: 3, padding: 2, dilation: 2)),
                             ("3x2 rect s(1,2)", Conv2DConfig(inChannels: 5, outChannels: 6, kernelSize: (3, 2), stride: (1, 2),
                                                              padding: (1, 0)))] {
            let conv = Conv2d(cfg, bias: true, rng: &rng)
            let x = Tensor.normal([2, cfg.inChannels, 5, 6], rng: &rng)
            check(maps: [x], parameters: [conv.weight, conv.bias!], h: 0.5, tol: 1e-4, label) { m, _ in conv(m[0]).flattened() }
        }
    }

    /// A map read by a convolution with padding 2 (a wider copy) and then by ops that pair it
    /// with halo-1 buffers: a residual sum, a batch norm, a sub-batch.
    func testWidePaddingReadersThenPairedOps() {
        var rng = SeededRNG(seed: 12)
        let conv = Conv2d(4, 4, kernelSize: 5, padding: 2, bias: true, rng: &rng)
        let bn = BatchNorm2d(4)
        nonTrivial(bn, rng: &rng)
        let x = Tensor.normal([3, 4, 6, 5], rng: &rng)
        check(maps: [x], parameters: [conv.weight, bn.weight], h: 1e-2, tol: 2e-2, "5x5 then pairs") { m, _ in
            let y = m[0].adding(conv(m[0]))      // the conv reads a halo-2 copy; the sum pairs halo-1 buffers
            let z = bn(m[0]).adding(y)
            let rows = [2, 0]
            return z.adding(conv(m[0].gathering(rows: rows)), atRows: rows).flattened()
        }
    }

    /// Activations fused into batch norm and convolutions (kinks make central differences
    /// unreliable there): against the layer path, whose activation backward is checked by
    /// differences on inputs kept away from the kinks (`GradientCheckTests.testActivations`).
    func testFusedActivationsMatchLayerPath() {
        var rng = SeededRNG(seed: 11)
        let x = Tensor.normal([3, 10, 5, 4], rng: &rng)
        let r = Tensor.normal([3, 10, 5, 4], rng: &rng)
        for act in [Activation.relu, .relu1] {
            let bn = BatchNorm2d(10), conv = Conv2d(10, 10, kernelSize: 3, padding: 1, bias: true, rng: &rng)
            nonTrivial(bn, rng: &rng)
            let layer = ActivationLayer(act)
            for (label, engineOp, layerOp) in [
                ("bn", { (m: FeatureMap) in bn(m, activation: act) }, { (t: Tensor) in layer(bn(t)) }),
                ("conv", { (m: FeatureMap) in conv(m, activation: act) }, { (t: Tensor) in layer(conv(t)) }),
            ] as [(String, (FeatureMap) -> FeatureMap, (Tensor) -> Tensor)] {
                let params = [bn.weight, bn.bias, conv.weight, conv.bias!]
                params.forEach { $0.grad = nil }
                let e = Engine(threads: 2)
                e.begin(batch: 3, recording: true)
                let input = e.input(x, requiresGradient: true)
                let out = engineOp(input).flattened()
                e.backward(out, gradient: r.reshaped(out.shape))
                let engineGrads = params.map(\.grad)
                params.forEach { $0.grad = nil }
                let y = layerOp(x)
                assertClose(out.value.reshaped(y.shape), y, tol: 1e-5, "\(label) \(act) forward")
                let dx = label == "bn" ? bn.backward(layer.backward(r)) : conv.backward(layer.backward(r))
                assertClose(input.gradient!, dx, tol: 1e-5, "\(label) \(act) input gradient")
                for (a, b) in zip(engineGrads, params.map(\.grad)) where b != nil {
                    assertClose(a!, b!, tol: 1e-5, "\(label) \(act) parameter gradient")
                }
            }
        }
    }

    func testConcatAndSlice() {
        var rng = SeededRNG(seed: 5)
        let parts = [6, 6, 5, 8].map { Tensor.normal([2, $0, 3, 4], rng: &rng) }
        check(maps: parts, h: 0.5, tol: 1e-4, "concat 6+6+5+8") { m, _ in FeatureMap.concat(m).flattened() }
        // A part used twice, and a slice across block boundaries.
        check(maps: Array(parts.prefix(2)), h: 0.5, tol: 1e-4, "concat with repeats + slice") { m, _ in
            FeatureMap.concat([m[0], m[1], m[0]]).channels(3..<14).flattened()
        }
        // Values, not only gradients: against the NCHW reference.
        let e = Engine(threads: 2)
        e.begin(batch: 2, recording: false)
        let y = FeatureMap.concat(parts.map { e.input($0) })
        XCTAssertEqual(y.toTensor().scalars, Ops.concatChannels(parts).scalars)
        XCTAssertEqual(y.channels(5..<19).toTensor().scalars, Ops.sliceChannels(Ops.concatChannels(parts), 5..<19).scalars)
    }

    func testSampleGatherAndScatter() {
        var rng = SeededRNG(seed: 6)
        let x = Tensor.normal([5, 7, 3, 3], rng: &rng)
        let s = Tensor.normal([5, 7], rng: &rng)
        check(maps: [x], vectors: [s], h: 0.5, tol: 1e-4, "gather → scale → scatter-add") { m, v in
            let rows = [3, 1]
            return m[0].adding(m[0].gathering(rows: rows).scaled(by: v[0].gathering(rows: rows)), atRows: rows).flattened()
        }
        let e = Engine(threads: 1)
        e.begin(batch: 5, recording: false)
        let g = e.input(x).gathering(rows: [4, 0, 2])
        XCTAssertEqual(g.samples, [4, 0, 2])
        XCTAssertEqual(g.toTensor().scalars, Tensor.concatBatch([x.batch(4), x.batch(0), x.batch(2)]).scalars)
    }

    func testReplacingRows() {
        var rng = SeededRNG(seed: 16)
        let x = Tensor.normal([5, 7, 3, 3], rng: &rng)
        let s = Tensor.normal([5, 7], rng: &rng)
        check(maps: [x], vectors: [s], h: 0.5, tol: 1e-4, "gather → scale → replace rows") { m, v in
            let rows = [3, 1]
            let u = m[0].gathering(rows: rows).scaled(by: v[0].gathering(rows: rows))
            return m[0].replacing(rows: rows, with: u).flattened()
        }
        check(maps: [x], vectors: [s], h: 0.5, tol: 1e-4, "updating rows") { m, v in
            m[0].updatingRows([4, 0, 2]) { $0.scaled(by: v[0].gathering(rows: [4, 0, 2])) }.flattened()
        }
    }

    func testAddScaleResizePool() {
        var rng = SeededRNG(seed: 8)
        let a = FiniteDifferences.spreadValues([2, 9, 4, 4], spacing: 0.05, seed: 1)
        let b = FiniteDifferences.spreadValues([2, 9, 4, 4], spacing: 0.05, seed: 2)
        check(maps: [a, b], h: 0.01, tol: 1e-3, "add relu") { m, _ in m[0].adding(m[1], activation: .relu).flattened() }
        check(maps: [a], h: 0.01, tol: 1e-3, "add to itself") { m, _ in m[0].adding(m[0]).flattened() }
        let x = Tensor.normal([3, 10, 5, 4], rng: &rng)
        check(maps: [x], vectors: [Tensor.normal([3], rng: &rng)], h: 0.5, tol: 1e-4, "scale per sample") { m, v in
            m[0].scaled(by: v[0]).flattened()
        }
        check(maps: [x], vectors: [Tensor.normal([3, 10], rng: &rng)], h: 0.5, tol: 1e-4, "scale per channel") { m, v in
            m[0].scaled(by: v[0]).flattened()
        }
        for (hh, ww) in [(9, 7), (3, 2), (1, 1)] {
            check(maps: [x], h: 0.5, tol: 1e-4, "resize to \(hh)×\(ww)") { m, _ in m[0].resized(height: hh, width: ww).flattened() }
        }
        let distinct = FiniteDifferences.spreadValues([2, 10, 6, 5], spacing: 0.05, seed: 3)
        for p in [Pool2DConfig(kernelSize: 2), Pool2DConfig(kernelSize: 3, stride: 2, padding: 1)] {
            check(maps: [distinct], h: 0.01, tol: 1e-3, "max pool \(p)") { m, _ in m[0].maxPooled(p).flattened() }
            check(maps: [distinct], h: 0.5, tol: 1e-4, "avg pool \(p)") { m, _ in m[0].averagePooled(p).flattened() }
        }
        // Values against the NCHW ops.
        let e = Engine(threads: 2)
        e.begin(batch: 3, recording: false)
        let m = e.input(x)
        assertClose(m.resized(height: 9, width: 7).toTensor(), Ops.resizeBilinearAlignCorners(x, height: 9, width: 7), tol: 1e-6, "resize")
        assertClose(m.maxPooled(Pool2DConfig(kernelSize: 2)).toTensor(), Ops.maxPool2d(x, Pool2DConfig(kernelSize: 2)), tol: 0, "max pool")
    }

    func testHeadOps() {
        var rng = SeededRNG(seed: 9)
        let fc = Linear(8, 5, rng: &rng)
        let x = Tensor.normal([3, 8, 3, 2], rng: &rng)
        check(maps: [x], parameters: [fc.weight, fc.bias!], h: 1e-2, tol: 1e-2, "pool → linear → relu1 → softmax") { m, _ in
            fc(m[0].globalAveragePooled()).activated(.relu1).softmax()
        }
    }

    /// Gradients reach a soft variable through a hard forward value unchanged.
    func testStraightThroughEstimator() {
        let e = Engine(threads: 1)
        e.begin(batch: 2, recording: true)
        let soft = e.variable(Tensor(shape: [2, 2], scalars: [0.3, 0.7, 0.9, 0.1]))
        soft.requiresGradient = true
        let hard = soft.straightThrough(forward: Tensor(shape: [2, 2], scalars: [0, 1, 1, 0]))
        XCTAssertEqual(hard.value.scalars, [0, 1, 1, 0])
        let g = Tensor(shape: [2, 2], scalars: [1, 2, 3, 4])
        e.backward(hard, gradient: g)
        XCTAssertEqual(soft.gradient?.scalars, g.scalars)
    }

    /// Several outputs and penalties on intermediate tensors: each term's gradient, weighted.
    func testObjectiveSeedsEveryTerm() {
        var rng = SeededRNG(seed: 10)
        let fc1 = Linear(4, 3, rng: &rng), fc2 = Linear(4, 3, rng: &rng)
        let x = Tensor.normal([2, 4, 2, 2], rng: &rng)
        let labels = [2, 0]
        for (w1, w2, lambda) in [(Float(1), Float(1), Float(0)), (0.5, 2, 0.1)] {
            // L = w1·CE(fc1(p)) + w2·CE(fc2(p)) + λ·Σ|p|, p = pooled x.
            func total(_ t: Tensor) -> Double {
                let p = Ops.globalAvgPool(t)
                return Double(w1) * DoubleForward.crossEntropy(fc1(p), labels, smoothing: 0)
                    + Double(w2) * DoubleForward.crossEntropy(fc2(p), labels, smoothing: 0)
                    + Double(lambda) * p.scalars.reduce(0.0) { $0 + Double(abs($1)) }
            }
            let e = Engine(threads: 1)
            e.begin(batch: 2, recording: true)
            let input = e.input(x, requiresGradient: true)
            let pooled = input.globalAveragePooled()
            var objective = Objective()
            objective.addCrossEntropy([fc1(pooled), fc2(pooled)], labels: labels, weights: [w1, w2])
            objective.add(pooled, Loss.l1(pooled.value, weight: lambda))
            XCTAssertEqual(Double(objective.value), total(x), accuracy: 1e-4)
            e.backward(objective)
            assertClose(input.gradient!, FiniteDifferences.gradient(of: x, h: 1e-2, total), tol: 1e-2, "objective \(w1) \(w2) \(lambda)")
        }
    }
}
