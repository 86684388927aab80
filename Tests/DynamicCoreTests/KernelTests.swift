import DynamicCore
import TestSupport
import XCTest

/// Every optimized kernel against its `Reference` twin over edge sizes (DESIGN §4).
final class KernelTests: XCTestCase {
    func testGemmAgainstReference() {
        var rng = SeededRNG(seed: 7)
        let sizes = [1, 5, 6, 7, 16, 17, 23]
        for m in sizes {
            for n in [1, 8, 15, 16, 17, 33] {
                for k in [1, 9, 16, 300] {
                    for (transA, transB) in [(false, false), (true, false), (false, true)] {
                        let a = Tensor.normal([m * k], rng: &rng), b = Tensor.normal([k * n], rng: &rng)
                        let (ars, acs) = transA ? (1, m) : (k, 1)
                        let (brs, bcs) = transB ? (1, k) : (n, 1)
                        var c0 = Tensor.normal([m * n], rng: &rng)
                        var c1 = c0
                        let accumulate = (m + n + k) % 2 == 0
                        a.withUnsafeBufferPointer { ap in b.withUnsafeBufferPointer { bp in
                            c0.withUnsafeMutableBufferPointer { cp in
                                Gemm.sgemm(m: m, n: n, k: k, a: ap.baseAddress!, aRowStride: ars, aColStride: acs,
                                           b: bp.baseAddress!, bRowStride: brs, bColStride: bcs, c: cp.baseAddress!,
                                           ldc: n, accumulate: accumulate, threads: (n % 2) + 1)
                            }
                            c1.withUnsafeMutableBufferPointer { cp in
                                Reference.sgemm(m: m, n: n, k: k, a: ap.baseAddress!, aRowStride: ars, aColStride: acs,
                                                b: bp.baseAddress!, bRowStride: brs, bColStride: bcs, c: cp.baseAddress!,
                                                ldc: n, accumulate: accumulate)
                            }
                        } }
                        assertClose(c0, c1, tol: 2e-6, "gemm m=\(m) n=\(n) k=\(k) tA=\(transA) tB=\(transB)")
                    }
                }
            }
        }
    }

    func testConv2dAgainstReference() {
        var rng = SeededRNG(seed: 11)
        struct Case { var cin, cout, k, s, p, d, g, h, w: Int; var bias: Bool }
        var cases: [Case] = []
        for w in [1, 7, 8, 9, 16, 23] {
            cases.append(Case(cin: 3, cout: 5, k: 3, s: 1, p: 1, d: 1, g: 1, h: 5, w: w, bias: true))
            cases.append(Case(cin: 4, cout: 7, k: 3, s: 2, p: 1, d: 1, g: 1, h: 6, w: w, bias: false))
            cases.append(Case(cin: 5, cout: 3, k: 1, s: 1, p: 0, d: 1, g: 1, h: 3, w: w, bias: true))
            cases.append(Case(cin: 6, cout: 6, k: 3, s: 1, p: 1, d: 1, g: 6, h: 4, w: w, bias: true))   // depthwise
            cases.append(Case(cin: 6, cout: 6, k: 3, s: 2, p: 1, d: 1, g: 6, h: 5, w: w, bias: false))  // depthwise s2
        }
        cases += [
            Case(cin: 6, cout: 9, k: 3, s: 1, p: 1, d: 1, g: 3, h: 7, w: 9, bias: true),    // grouped
            Case(cin: 3, cout: 6, k: 3, s: 1, p: 1, d: 1, g: 3, h: 7, w: 9, bias: true),    // depthwise ×2
            Case(cin: 3, cout: 4, k: 3, s: 1, p: 2, d: 2, g: 1, h: 9, w: 9, bias: true),    // dilated
            Case(cin: 3, cout: 4, k: 5, s: 1, p: 2, d: 1, g: 1, h: 7, w: 7, bias: true),
            Case(cin: 5, cout: 9, k: 3, s: 2, p: 0, d: 1, g: 1, h: 23, w: 23, bias: true),
            Case(cin: 17, cout: 33, k: 3, s: 1, p: 1, d: 1, g: 1, h: 8, w: 8, bias: true),  // odd channels
            Case(cin: 16, cout: 16, k: 1, s: 2, p: 0, d: 1, g: 1, h: 8, w: 8, bias: false), // strided 1×1
            Case(cin: 2, cout: 3, k: 7, s: 3, p: 3, d: 1, g: 1, h: 11, w: 10, bias: true),
        ]
        for c in cases {
            let cfg = Conv2DConfig(inChannels: c.cin, outChannels: c.cout, kernelSize: c.k, stride: c.s,
                                   padding: c.p, dilation: c.d, groups: c.g)
            for n in [1, 3] {
                let x = Tensor.normal([n, c.cin, c.h, c.w], rng: &rng)
                let wt = Tensor.normal(cfg.weightShape, rng: &rng)
                let b = c.bias ? Tensor.normal([c.cout], rng: &rng) : nil
                let ref = Reference.conv2d(x, weight: wt, bias: b, config: cfg)
                for threads in [1, 2] {
                    let y = Ops.conv2d(x, weight: wt, bias: b, config: cfg, threads: threads)
                    assertClose(y, ref, tol: 2e-6, "\(c) n=\(n) threads=\(threads)")
                }
                let fused = Ops.conv2d(x, weight: wt, bias: b, config: cfg, activation: .relu)
                XCTAssertEqual(fused.scalars, Ops.relu(Ops.conv2d(x, weight: wt, bias: b, config: cfg)).scalars)
            }
        }
    }

    func testConvResultsDoNotDependOnThreadCount() {
        var rng = SeededRNG(seed: 3)
        let cfg = Conv2DConfig(inChannels: 16, outChannels: 32, kernelSize: 3, padding: 1)
        let w = Tensor.normal(cfg.weightShape, rng: &rng)
        for n in [1, 4] {
            let x = Tensor.normal([n, 16, 12, 12], rng: &rng)
            let y1 = Ops.conv2d(x, weight: w, config: cfg, threads: 1)
            let y2 = Ops.conv2d(x, weight: w, config: cfg, threads: 2)
            let y3 = Ops.conv2d(x, weight: w, config: cfg, threads: 3)
            XCTAssertEqual(y1.scalars, y2.scalars)
            XCTAssertEqual(y1.scalars, y3.scalars)
        }
    }

    func testBatchNormAndFolding() {
        var rng = SeededRNG(seed: 5)
        for c in [1, 3, 8, 9] {
            let x = Tensor.normal([2, c, 5, 7], rng: &rng)
            let g = Tensor.uniform([c], low: 0.5, high: 1.5, rng: &rng), b = Tensor.normal([c], rng: &rng)
            let m = Tensor.normal([c], rng: &rng), v = Tensor.uniform([c], low: 0.5, high: 2, rng: &rng)
            assertClose(Ops.batchNorm(x, gamma: g, beta: b, mean: m, variance: v),
                        Reference.batchNorm(x, gamma: g, beta: b, mean: m, variance: v), tol: 1e-6)
            let cfg = Conv2DConfig(inChannels: 3, outChannels: c, kernelSize: 3, padding: 1)
            let xi = Tensor.normal([2, 3, 6, 6], rng: &rng), w = Tensor.normal(cfg.weightShape, rng: &rng)
            let bias = Tensor.normal([c], rng: &rng)
            let unfused = Reference.batchNorm(Reference.conv2d(xi, weight: w, bias: bias, config: cfg),
                                              gamma: g, beta: b, mean: m, variance: v)
            let f = Ops.foldBatchNorm(weight: w, bias: bias, gamma: g, beta: b, mean: m, variance: v)
            assertClose(Ops.conv2d(xi, weight: f.weight, bias: f.bias, config: cfg), unfused, tol: 1e-5)
        }
    }

    func testPoolingAgainstReference() {
        var rng = SeededRNG(seed: 9)
        for w in [1, 2, 7, 8, 9, 16, 23] {
            let x = Tensor.normal([2, 3, 9, w], rng: &rng)
            for (k, s, p) in [(1, 1, 0), (2, 2, 0), (3, 2, 1), (3, 1, 1), (2, 1, 1)] where k - 2 * p <= w + 0 && k <= w + 2 * p {
                for include in [true, false] {
                    let cfg = Pool2DConfig(kernelSize: k, stride: s, padding: p, countIncludePad: include)
                    assertClose(Ops.maxPool2d(x, cfg), Reference.maxPool2d(x, cfg), tol: 0, "max k\(k) s\(s) p\(p) w\(w)")
                    assertClose(Ops.avgPool2d(x, cfg), Reference.avgPool2d(x, cfg), tol: 1e-6,
                                "avg k\(k) s\(s) p\(p) w\(w) include=\(include)")
                }
            }
            assertClose(Ops.globalAvgPool(x), Reference.globalAvgPool(x), tol: 1e-6)
        }
    }

    func testLinearSoftmaxConcatAgainstReference() {
        var rng = SeededRNG(seed: 13)
        for (n, k, m) in [(1, 1, 1), (3, 17, 9), (8, 64, 10), (9, 23, 16), (2, 512, 10)] {
            let x = Tensor.normal([n, k], rng: &rng), w = Tensor.normal([m, k], rng: &rng), b = Tensor.normal([m], rng: &rng)
            assertClose(Ops.linear(x, weight: w, bias: b), Reference.linear(x, weight: w, bias: b), tol: 2e-6)
            assertClose(Ops.linear(x, weight: w, bias: nil), Reference.linear(x, weight: w, bias: nil), tol: 2e-6)
            let z = x * 5
            assertClose(Ops.softmax(z), Reference.softmax(z), tol: 1e-6)
            assertClose(Ops.logSoftmax(z), Reference.logSoftmax(z), tol: 1e-6)
        }
        // Softmax rows sum to one and survive huge logits.
        let big = Tensor(shape: [1, 3], scalars: [1000, 999, -1000])
        XCTAssertEqual(Ops.softmax(big).sum(), 1, accuracy: 1e-6)
        XCTAssertFalse(Ops.logSoftmax(big).scalars.contains { !$0.isFinite })
        for (c1, c2) in [(1, 1), (3, 5), (8, 9)] {
            let a = Tensor.normal([2, c1, 3, 4], rng: &rng), b = Tensor.normal([2, c2, 3, 4], rng: &rng)
            let y = Ops.concatChannels([a, b])
            XCTAssertEqual(y.scalars, Reference.concatChannels([a, b]).scalars)
            XCTAssertEqual(Ops.sliceChannels(y, c1..<(c1 + c2)).scalars, b.scalars)
        }
    }

    func testBilinearAlignCornersAgainstReference() {
        var rng = SeededRNG(seed: 17)
        for (h, w) in [(1, 1), (2, 3), (5, 5), (8, 8), (9, 7), (16, 16)] {
            let x = Tensor.normal([2, 3, h, w], rng: &rng)
            for (oh, ow) in [(1, 1), (1, 4), (3, 3), (4, 8), (9, 9), (16, 16), (23, 7)] {
                assertClose(Ops.resizeBilinearAlignCorners(x, height: oh, width: ow),
                            Reference.resizeBilinearAlignCorners(x, height: oh, width: ow), tol: 4e-6,
                            "\(h)x\(w) → \(oh)x\(ow)")
            }
            // Corners map to corners exactly.
            let y = Ops.resizeBilinearAlignCorners(x, height: 2 * h + 1, width: 3 * w + 2)
            XCTAssertEqual(y[1, 2, 2 * h, 3 * w + 1], x[1, 2, h - 1, w - 1])
            XCTAssertEqual(y[0, 0, 0, 0], x[0, 0, 0, 0])
            // Same size is the identity.
            XCTAssertEqual(Ops.resizeBilinearAlignCorners(x, height: h, width: w).scalars, x.scalars)
        }
    }

    func testHashUniformMatchesDefinition() {
        // Values checked against the numpy implementation in scripts/make_fixtures.py.
        let a = Tensor.hashUniform([7, 5], seed: Tensor.fnv1a64("a"), low: -1, high: 1)
        XCTAssertEqual(Tensor.fnv1a64("a"), 12_638_187_200_555_641_996)
        XCTAssertEqual(Array(a.scalars.prefix(5)),
                       [-0.25653815269470215, 0.9962445497512817, 0.9842129945755005, 0.37188172340393066, -0.051727294921875])
    }
}
