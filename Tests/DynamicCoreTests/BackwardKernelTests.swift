import DynamicCore
import TestSupport
import XCTest

/// Every fast backward kernel against its `Reference` twin over edge sizes (DESIGN §4).
final class BackwardKernelTests: XCTestCase {
    struct ConvCase { var cin, cout, k, s, p, d, g, h, w: Int }

    static var convCases: [ConvCase] {
        var cases: [ConvCase] = []
        for w in [1, 7, 8, 9, 16, 23] {
            cases.append(ConvCase(cin: 3, cout: 5, k: 3, s: 1, p: 1, d: 1, g: 1, h: 5, w: w))
            cases.append(ConvCase(cin: 4, cout: 7, k: 3, s: 2, p: 1, d: 1, g: 1, h: 6, w: w))
            cases.append(ConvCase(cin: 5, cout: 3, k: 1, s: 1, p: 0, d: 1, g: 1, h: 3, w: w))    // direct 1×1
            cases.append(ConvCase(cin: 6, cout: 6, k: 3, s: 1, p: 1, d: 1, g: 6, h: 4, w: w))    // depthwise
            cases.append(ConvCase(cin: 6, cout: 6, k: 3, s: 2, p: 1, d: 1, g: 6, h: 5, w: w))    // depthwise s2
        }
        return cases + [
            ConvCase(cin: 6, cout: 9, k: 3, s: 1, p: 1, d: 1, g: 3, h: 7, w: 9),     // grouped
            ConvCase(cin: 3, cout: 6, k: 3, s: 1, p: 1, d: 1, g: 3, h: 7, w: 9),     // depthwise ×2
            ConvCase(cin: 4, cout: 6, k: 1, s: 1, p: 0, d: 1, g: 2, h: 5, w: 7),     // grouped direct 1×1
            ConvCase(cin: 3, cout: 4, k: 3, s: 1, p: 2, d: 2, g: 1, h: 9, w: 9),     // dilated
            ConvCase(cin: 3, cout: 3, k: 3, s: 2, p: 2, d: 2, g: 3, h: 9, w: 8),     // dilated depthwise s2
            ConvCase(cin: 5, cout: 9, k: 3, s: 2, p: 0, d: 1, g: 1, h: 23, w: 23),   // uncovered border
            ConvCase(cin: 17, cout: 33, k: 3, s: 1, p: 1, d: 1, g: 1, h: 8, w: 8),   // odd channels
            ConvCase(cin: 16, cout: 16, k: 1, s: 2, p: 0, d: 1, g: 1, h: 8, w: 8),   // strided 1×1
            ConvCase(cin: 2, cout: 3, k: 7, s: 3, p: 3, d: 1, g: 1, h: 11, w: 10),
        ]
    }

    func testConvBackwardAgainstReference() {
        var rng = SeededRNG(seed: 21)
        for c in Self.convCases {
            let cfg = Conv2DConfig(inChannels: c.cin, outChannels: c.cout, kernelSize: c.k, stride: c.s,
                                   padding: c.p, dilation: c.d, groups: c.g)
            let (ho, wo) = cfg.outputSize(h: c.h, w: c.w)
            for n in [1, 3, 6] {
                let x = Tensor.normal([n, c.cin, c.h, c.w], rng: &rng)
                let wt = Tensor.normal(cfg.weightShape, rng: &rng)
                let dy = Tensor.normal([n, c.cout, ho, wo], rng: &rng)
                let refX = Reference.conv2dBackwardInput(dy, weight: wt, config: cfg, inputHeight: c.h, inputWidth: c.w)
                let refW = Reference.conv2dBackwardWeight(dy, input: x, config: cfg)
                var byThreads: [[Float]] = []
                for threads in [1, 2] {
                    let dx = Ops.conv2dBackwardInput(dy, weight: wt, config: cfg, inputHeight: c.h, inputWidth: c.w,
                                                     threads: threads)
                    let dw = Ops.conv2dBackwardWeight(dy, input: x, config: cfg, threads: threads)
                    assertClose(dx, refX, tol: 5e-6, "input grad \(c) n=\(n) threads=\(threads)")
                    assertClose(dw, refW, tol: 1e-5, "weight grad \(c) n=\(n) threads=\(threads)")
                    byThreads.append(dx.scalars + dw.scalars)
                }
                XCTAssertEqual(byThreads[0], byThreads[1], "results depend on the thread count \(c) n=\(n)")
                assertClose(Ops.biasGradient(dy), Reference.biasGradient(dy), tol: 5e-6, "bias grad \(c)")
            }
        }
    }

    /// The phase-split input gradient on blocked buffers with a residual: phases without taps
    /// (1×1 stride 2 reaches only even pixels) must still write residual there. Under both kernel
    /// widths; the wider cases reach the 16-lane row kernels, a 5×5 stride-2 convolution through
    /// phases whose output pixels are two apart. Weights re-packed in place, as training does.
    func testBlockedInputGradientWithResidual() {
        var rng = SeededRNG(seed: 22)
        forEachKernelWidth { options in
            for (cin, cout) in [(12, 20), (40, 24)] {
                for (k, s, p, h) in [(1, 2, 0, 8), (3, 2, 1, 7), (3, 1, 1, 5), (3, 2, 0, 9), (3, 1, 1, 19), (5, 2, 2, 34)] {
                    let cfg = Conv2DConfig(inChannels: cin, outChannels: cout, kernelSize: k, stride: s, padding: p)
                    let (ho, wo) = cfg.outputSize(h: h, w: h)
                    let wt = Tensor.normal(cfg.weightShape, rng: &rng)
                    let dy = Tensor.normal([2, cout, ho, wo], rng: &rng), r = Tensor.normal([2, cin, h, h], rng: &rng)
                    let dx = BlockedBuffer(BlockedShape(n: 2, c: cin, h: h, w: h, halo: 1))
                    dx.load(Tensor.normal([2, cin, h, h], rng: &rng))        // stale values must all be overwritten
                    // Packed for other weights first: training re-packs in place every step.
                    let gradient = BlockedConvInputGradient(weight: Tensor.normal(cfg.weightShape, rng: &rng), config: cfg,
                                                            options: options)
                    gradient.repack(weight: wt)
                    gradient.run(BlockedBuffer(dy, halo: 3), into: dx, residual: BlockedBuffer(r, halo: 1))
                    let expected = Reference.conv2dBackwardInput(dy, weight: wt, config: cfg, inputHeight: h, inputWidth: h) + r
                    assertClose(dx.toTensor(), expected, tol: 5e-6, "\(cin)→\(cout) k\(k) s\(s) p\(p) \(h)×\(h) \(options)")
                    // In place (the residual is dx itself), as training adds a block's input
                    // gradient to its shortcut gradient: every pixel must take the residual once.
                    let inPlace = BlockedBuffer(r, halo: 1)
                    gradient.run(BlockedBuffer(dy, halo: 3), into: inPlace, residual: inPlace)
                    assertClose(inPlace.toTensor(), expected, tol: 5e-6, "in place \(cin)→\(cout) k\(k) s\(s) \(h)×\(h) \(options)")
                }
            }
        }
    }

    func testBiasGradientOfMatrix() {
        var rng = SeededRNG(seed: 2)
        for (n, m) in [(1, 1), (7, 9), (16, 23)] {
            let g = Tensor.normal([n, m], rng: &rng)
            assertClose(Ops.biasGradient(g), Reference.biasGradient(g), tol: 5e-6)
        }
    }

    func testActivationBackwardAgainstReference() {
        var rng = SeededRNG(seed: 4)
        for count in [1, 7, 8, 9, 16, 23] {
            // Include exact kinks (0 and 1), where the SIMD and scalar paths must agree.
            var x = Tensor.uniform([2, count], low: -1.5, high: 2.5, rng: &rng)
            x[0, 0] = 0
            if count > 1 { x[0, 1] = 1 }
            let g = Tensor.normal([2, count], rng: &rng)
            for act in [Activation.identity, .relu, .relu1, .leakyRelu1(slope: 0.1)] {
                XCTAssertEqual(Ops.activationBackward(g, input: x, act).scalars,
                               Reference.activationBackward(g, input: x, act).scalars, "\(act) count=\(count)")
            }
        }
    }

    func testBatchNormBackwardAgainstReference() {
        var rng = SeededRNG(seed: 5)
        for (n, c, h, w) in [(1, 3, 1, 7), (2, 5, 3, 3), (4, 2, 4, 9), (3, 1, 2, 16), (8, 4, 1, 1)] {
            let x = Tensor.normal([n, c, h, w], mean: 1, std: 2, rng: &rng)
            let g = Tensor.normal([n, c, h, w], rng: &rng)
            let gamma = Tensor.uniform([c], low: 0.5, high: 1.5, rng: &rng)
            let eps: Float = 1e-5
            // Statistics as the layer computes them (Double accumulation, biased variance).
            var mean = [Float](repeating: 0, count: c), invStd = mean
            let xs = x.scalars, plane = h * w
            for ch in 0..<c {
                var s = 0.0, sq = 0.0
                for b in 0..<n { for i in 0..<plane { let v = Double(xs[(b * c + ch) * plane + i]); s += v; sq += v * v } }
                let m = s / Double(n * plane)
                mean[ch] = Float(m)
                invStd[ch] = 1 / (Float(sq / Double(n * plane) - m * m) + eps).squareRoot()
            }
            let fast = Ops.batchNormTrainingBackward(g, input: x, mean: mean, invStd: invStd, gamma: gamma)
            let ref = Reference.batchNormTrainingBackward(g, input: x, gamma: gamma, eps: eps)
            assertClose(fast.input, ref.input, tol: 1e-4, "dx \([n, c, h, w])")
            assertClose(fast.gamma, ref.gamma, tol: 1e-5, "dgamma \([n, c, h, w])")
            assertClose(fast.beta, ref.beta, tol: 1e-5, "dbeta \([n, c, h, w])")
        }
    }

    func testPoolingBackwardAgainstReference() {
        var rng = SeededRNG(seed: 6)
        let configs = [Pool2DConfig(kernelSize: 2), Pool2DConfig(kernelSize: 3, stride: 1, padding: 1),
                       Pool2DConfig(kernelSize: 3, stride: 2, padding: 1, countIncludePad: false),
                       Pool2DConfig(kernelSize: 3, stride: 2)]
        for w in [1, 7, 8, 9, 16, 23] {
            for p in configs {
                let h = 5
                let (ho, wo) = p.outputSize(h: h, w: w)
                guard ho > 0 && wo > 0 else { continue }
                // Quantized values make ties common, exercising the first-maximum rule.
                let x = Tensor.uniform([2, 3, h, w], low: 0, high: 4, rng: &rng).map { $0.rounded(.down) }
                let g = Tensor.normal([2, 3, ho, wo], rng: &rng)
                XCTAssertEqual(Ops.maxPool2dBackward(g, input: x, p).scalars, Reference.maxPool2dBackward(g, input: x, p).scalars,
                               "max \(p) w=\(w)")
                assertClose(Ops.avgPool2dBackward(g, inputShape: x.shape, p),
                            Reference.avgPool2dBackward(g, inputShape: x.shape, p), tol: 1e-6, "avg \(p) w=\(w)")
            }
            let g = Tensor.normal([2, 3], rng: &rng)
            assertClose(Ops.globalAvgPoolBackward(g, inputShape: [2, 3, 4, w]),
                        Reference.globalAvgPoolBackward(g, inputShape: [2, 3, 4, w]), tol: 1e-6)
        }
    }

    func testLinearBackwardAgainstReference() {
        var rng = SeededRNG(seed: 8)
        for (n, k, m) in [(1, 1, 1), (7, 9, 8), (16, 23, 10), (5, 64, 17)] {
            let x = Tensor.normal([n, k], rng: &rng), wt = Tensor.normal([m, k], rng: &rng)
            let g = Tensor.normal([n, m], rng: &rng)
            for threads in [1, 2] {
                assertClose(Ops.linearBackwardInput(g, weight: wt, threads: threads),
                            Reference.linearBackwardInput(g, weight: wt), tol: 5e-6)
                assertClose(Ops.linearBackwardWeight(g, input: x, threads: threads),
                            Reference.linearBackwardWeight(g, input: x), tol: 5e-6)
            }
        }
    }

    func testResizeBackwardAgainstReference() {
        var rng = SeededRNG(seed: 9)
        for (h, w, oh, ow) in [(1, 1, 3, 4), (4, 5, 8, 9), (8, 9, 4, 5), (7, 16, 23, 8), (5, 5, 1, 1), (3, 23, 7, 1)] {
            let g = Tensor.normal([2, 3, oh, ow], rng: &rng)
            assertClose(Ops.resizeBilinearAlignCornersBackward(g, inputHeight: h, inputWidth: w),
                        Reference.resizeBilinearAlignCornersBackward(g, inputHeight: h, inputWidth: w),
                        tol: 2e-6, "\(h)×\(w) → \(oh)×\(ow)")
        }
    }

    func testConcatBackwardSplitsChannels() {
        var rng = SeededRNG(seed: 10)
        let parts = [Tensor.normal([2, 3, 4, 5], rng: &rng), Tensor.normal([2, 1, 4, 5], rng: &rng),
                     Tensor.normal([2, 4, 4, 5], rng: &rng)]
        let back = Ops.concatChannelsBackward(Ops.concatChannels(parts), channels: [3, 1, 4])
        XCTAssertEqual(back.map(\.scalars), parts.map(\.scalars))
    }
}
