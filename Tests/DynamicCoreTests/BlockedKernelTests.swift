import DynamicCore
import TestSupport
import XCTest

/// The NCHW8c kernels against `Reference` over edge sizes: widths around the 6- and 12-pixel
/// tiles and the 8-channel block, 1–5 output blocks (the wide kernel's 32-channel tiles and their
/// remainders), odd channel counts, strides, padding, dilation, residual and clamps — under both
/// kernel widths.
final class BlockedKernelTests: XCTestCase {
    func testBlockedBufferRoundTrip() {
        var rng = SeededRNG(seed: 1)
        for c in [1, 7, 8, 9, 17] {
            let x = Tensor.normal([2, c, 5, 3], rng: &rng)
            for halo in [0, 1, 2] {
                let b = BlockedBuffer(x, halo: halo)
                XCTAssertEqual(b.toTensor().scalars, x.scalars)
                // Halo and padded channels stay zero.
                let s = b.shape
                XCTAssertEqual(b.pointer[0], 0 == halo ? x[0, 0, 0, 0] : 0)
                if c % 8 != 0 { XCTAssertEqual(b.pointer[(s.blocks - 1) * s.blockStride + s.pixelOffset(0, 0) + 7], 0) }
            }
        }
    }

    func testBlockedConvAgainstReference() {
        var rng = SeededRNG(seed: 2)
        struct Case { var cin, cout, k, s, p, d, h, w: Int }
        var cases: [Case] = []
        for w in [1, 5, 6, 7, 8, 9, 11, 12, 13, 16, 23] {
            cases.append(Case(cin: 8, cout: 16, k: 3, s: 1, p: 1, d: 1, h: 4, w: w))
            cases.append(Case(cin: 9, cout: 7, k: 3, s: 2, p: 1, d: 1, h: 5, w: w))
            cases.append(Case(cin: 3, cout: 17, k: 3, s: 1, p: 1, d: 1, h: 3, w: w))     // im2col stem
        }
        cases += [
            Case(cin: 16, cout: 32, k: 1, s: 1, p: 0, d: 1, h: 7, w: 7),
            Case(cin: 16, cout: 32, k: 1, s: 2, p: 0, d: 1, h: 8, w: 8),   // projection shortcut
            Case(cin: 24, cout: 40, k: 3, s: 1, p: 2, d: 2, h: 9, w: 9),
            Case(cin: 17, cout: 33, k: 5, s: 1, p: 2, d: 1, h: 6, w: 11),
            Case(cin: 64, cout: 64, k: 3, s: 1, p: 1, d: 1, h: 8, w: 8),
            Case(cin: 1, cout: 8, k: 7, s: 2, p: 3, d: 1, h: 13, w: 12),
            Case(cin: 5, cout: 9, k: 3, s: 2, p: 0, d: 1, h: 23, w: 23),
            Case(cin: 32, cout: 8, k: 3, s: 1, p: 0, d: 1, h: 4, w: 4),
            Case(cin: 16, cout: 48, k: 3, s: 1, p: 1, d: 1, h: 5, w: 5),
            Case(cin: 8, cout: 64, k: 3, s: 1, p: 1, d: 1, h: 3, w: 5),
            // Row kernels (16 lanes): 8-pixel tiles with a trailing pair, 16-pixel tiles with an
            // overlapping last tile, no padding, a row exactly one tile wide.
            Case(cin: 16, cout: 40, k: 3, s: 1, p: 1, d: 1, h: 3, w: 11),
            Case(cin: 9, cout: 16, k: 3, s: 1, p: 0, d: 1, h: 5, w: 19),
            Case(cin: 8, cout: 32, k: 3, s: 1, p: 1, d: 1, h: 2, w: 8),
            // One output block (the 8 × 8 kernel at 16 lanes): MSDNet/RANet's 6-channel growth.
            Case(cin: 22, cout: 6, k: 3, s: 1, p: 1, d: 1, h: 5, w: 19), Case(cin: 9, cout: 8, k: 1, s: 1, p: 0, d: 1, h: 3, w: 7),
            Case(cin: 12, cout: 3, k: 3, s: 2, p: 1, d: 1, h: 9, w: 6),
        ]
        forEachKernelWidth { options in
        for c in cases {
            let cfg = Conv2DConfig(inChannels: c.cin, outChannels: c.cout, kernelSize: c.k, stride: c.s,
                                   padding: c.p, dilation: c.d)
            let w = Tensor.normal(cfg.weightShape, rng: &rng), b = Tensor.normal([c.cout], rng: &rng)
            let conv = BlockedConv2D(weight: w, bias: b, config: cfg, options: options)
            for n in [1, 3] {
                let x = Tensor.normal([n, c.cin, c.h, c.w], rng: &rng)
                let ref = Reference.conv2d(x, weight: w, bias: b, config: cfg)
                let res = Tensor.normal(ref.shape, rng: &rng)
                for threads in [1, 2, 3] {
                    assertClose(conv(x, threads: threads), ref, tol: 2e-6, "\(c) n=\(n) t=\(threads) \(options)")
                }
                for act in [Activation.relu, .relu1, .identity] {
                    let expect = Reference.activation(Reference.add(ref, res), act)
                    // ReLU-1 clamps to [0, 1]: the error scale is that of the pre-activation sum.
                    let scale = Swift.max(1, ref.withUnsafeBufferPointer { $0.map(abs).max() ?? 1 })
                    assertClose(conv(x, residual: res, activation: act, threads: 2), expect, tol: 2e-6 * scale,
                                "\(c) residual \(act) \(options)")
                }
            }
        }
        }
    }

    func testBlockedConvWithHaloedBuffersLeavesHaloZero() {
        var rng = SeededRNG(seed: 3)
        let cfg = Conv2DConfig(inChannels: 16, outChannels: 16, kernelSize: 3, padding: 1)
        let w = Tensor.normal(cfg.weightShape, rng: &rng)
        let conv = BlockedConv2D(weight: w, bias: Tensor.normal([16], rng: &rng), config: cfg)
        let x = Tensor.normal([2, 16, 7, 9], rng: &rng)
        let input = BlockedBuffer(x, halo: 1)
        let out = BlockedBuffer(conv.outputShape(n: 2, h: 7, w: 9, halo: 1))
        conv.run(input, into: out, activation: .relu, threads: 2)
        let s = out.shape
        for img in 0..<2 { for blk in 0..<s.blocks { for yy in 0..<s.hp { for xx in 0..<s.wp
            where yy == 0 || xx == 0 || yy == s.hp - 1 || xx == s.wp - 1 {
            for k in 0..<8 { XCTAssertEqual(out.pointer[img * s.imageStride + blk * s.blockStride + (yy * s.wp + xx) * 8 + k], 0) }
        } } } }
        assertClose(out.toTensor(), Reference.relu(Reference.conv2d(x, weight: w, bias: conv.biasTensor, config: cfg)), tol: 2e-6)
    }

    /// `inputImages`: the active images of a larger batch read in place give the same bits as the
    /// same images gathered first — on the Winograd, row and pixel-table routes, both widths.
    func testInputImagesReadTheActiveImagesInPlace() {
        var rng = SeededRNG(seed: 51)
        // Winograd (16 lanes), rows (16 lanes, 24 channels), pixel tables (stride 2; 1×1).
        let cases = [(16, 32, 3, 1, 1, 8), (24, 32, 3, 1, 1, 16), (16, 24, 3, 2, 1, 9), (8, 16, 1, 1, 0, 5)]
        forEachKernelWidth { options in
            for (cin, cout, k, s, p, size) in cases {
                for winograd in [true, false] {
                    let cfg = Conv2DConfig(inChannels: cin, outChannels: cout, kernelSize: k, stride: s, padding: p)
                    let conv = BlockedConv2D(weight: Tensor.normal(cfg.weightShape, rng: &rng), bias: Tensor.normal([cout], rng: &rng),
                                             config: cfg, options: KernelOptions(width: options.width, winograd: winograd))
                    let x = Tensor.normal([5, cin, size, size], rng: &rng)
                    let images = [4, 1, 3]
                    let gathered = BlockedBuffer(Tensor.concatBatch(images.map { x.batch($0) }), halo: 1)
                    let shape = conv.outputShape(n: 3, h: size, w: size, halo: 1)
                    let residual = BlockedBuffer(shape)
                    residual.load(Tensor.normal([3, cout, shape.h, shape.w], rng: &rng))
                    let want = BlockedBuffer(shape), got = BlockedBuffer(shape)
                    conv.run(gathered, into: want, residual: residual, activation: .relu, threads: 2)
                    conv.run(BlockedBuffer(x, halo: 1), inputImages: images, into: got, residual: residual, activation: .relu, threads: 2)
                    let tag = "\(cin)→\(cout) k\(k) s\(s) \(size)² \(options.width) winograd \(winograd) "
                        + conv.kernelNameForTest(outputWidth: shape.w, outputHeight: shape.h)
                    XCTAssertEqual(got.toTensor().scalars, want.toTensor().scalars, tag)
                    XCTAssertTrue(got.haloIsZero, tag)
                }
            }
        }
    }

}

final class BlockedOpsTests: XCTestCase {
    func testDepthwiseAgainstReference() {
        var rng = SeededRNG(seed: 4)
        for c in [1, 7, 8, 9, 16, 23] {
            for (k, s, p, d) in [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 1), (3, 1, 2, 2), (1, 1, 0, 1)] {
                for w in [1, 4, 7, 9] {
                    let cfg = Conv2DConfig(inChannels: c, outChannels: c, kernelSize: k, stride: s, padding: p,
                                           dilation: d, groups: c)
                    let wt = Tensor.normal(cfg.weightShape, rng: &rng), b = Tensor.normal([c], rng: &rng)
                    let x = Tensor.normal([2, c, 6, w], rng: &rng)
                    let dw = BlockedDepthwiseConv2D(weight: wt, bias: b, config: cfg)
                    let out = BlockedBuffer(dw.outputShape(n: 2, h: 6, w: w, halo: 1))
                    dw.run(BlockedBuffer(x, halo: 2), into: out, activation: .relu, threads: 2)
                    let ref = Reference.relu(Reference.conv2d(x, weight: wt, bias: b, config: cfg))
                    assertClose(out.toTensor(), ref, tol: 1e-6, "c\(c) k\(k) s\(s) p\(p) d\(d) w\(w)")
                }
            }
        }
    }

    func testPoolingAndGlobalAverageAgainstReference() {
        var rng = SeededRNG(seed: 5)
        for c in [1, 8, 9, 17] {
            for w in [1, 2, 7, 8, 9] {
                let x = Tensor.normal([2, c, 7, w], rng: &rng)
                let input = BlockedBuffer(x, halo: 1)
                assertClose(BlockedOps.globalAvgPool(input), Reference.globalAvgPool(x), tol: 1e-6)
                for (k, s, p) in [(2, 2, 0), (3, 2, 1), (3, 1, 1), (1, 1, 0)] where k <= w + 2 * p {
                    for include in [true, false] {
                        let cfg = Pool2DConfig(kernelSize: k, stride: s, padding: p, countIncludePad: include)
                        let o = cfg.outputSize(h: 7, w: w)
                        for isMax in [true, false] {
                            let out = BlockedBuffer(BlockedShape(n: 2, c: c, h: o.h, w: o.w, halo: 1))
                            BlockedOps.pool(input, into: out, cfg, isMax: isMax)
                            let ref = isMax ? Reference.maxPool2d(x, cfg) : Reference.avgPool2d(x, cfg)
                            assertClose(out.toTensor(), ref, tol: 1e-6, "c\(c) w\(w) k\(k) s\(s) p\(p) max=\(isMax)")
                        }
                    }
                }
            }
        }
    }
}

final class BlockedWeightGradientTests: XCTestCase {
    func testWeightGradientAgainstReference() {
        var rng = SeededRNG(seed: 6)
        struct Case { var cin, cout, k, s, p, d, h, w: Int }
        var cases: [Case] = []
        for w in [1, 5, 8, 9, 16] {
            cases.append(Case(cin: 8, cout: 16, k: 3, s: 1, p: 1, d: 1, h: 4, w: w))
            cases.append(Case(cin: 9, cout: 7, k: 3, s: 2, p: 1, d: 1, h: 5, w: w))
        }
        cases += [Case(cin: 3, cout: 5, k: 3, s: 1, p: 1, d: 1, h: 6, w: 7), Case(cin: 16, cout: 32, k: 1, s: 2, p: 0, d: 1, h: 8, w: 8),
                  Case(cin: 5, cout: 9, k: 5, s: 1, p: 2, d: 1, h: 7, w: 6), Case(cin: 4, cout: 8, k: 3, s: 1, p: 2, d: 2, h: 9, w: 9),
                  // 3, 5 and 8 output blocks: whole and partial 32-channel tiles of the wide kernel.
                  Case(cin: 2, cout: 17, k: 3, s: 1, p: 1, d: 1, h: 5, w: 5), Case(cin: 3, cout: 40, k: 3, s: 1, p: 1, d: 1, h: 4, w: 6),
                  Case(cin: 2, cout: 64, k: 1, s: 1, p: 0, d: 1, h: 3, w: 3),
                  // Row kernels: 3, 5 and 1 output blocks, 1–3 input blocks, padding 0 and 1.
                  Case(cin: 20, cout: 24, k: 3, s: 1, p: 1, d: 1, h: 4, w: 7), Case(cin: 9, cout: 40, k: 3, s: 1, p: 0, d: 1, h: 5, w: 6),
                  Case(cin: 17, cout: 8, k: 3, s: 1, p: 1, d: 1, h: 3, w: 2),
                  // Without padding the last input of a row is real data: W + 2 inputs ≡ 2 (mod 3) reach the tail.
                  Case(cin: 9, cout: 16, k: 3, s: 1, p: 0, d: 1, h: 4, w: 8), Case(cin: 8, cout: 24, k: 3, s: 1, p: 0, d: 1, h: 3, w: 11)]
        forEachKernelWidth { options in
        for c in cases {
            let cfg = Conv2DConfig(inChannels: c.cin, outChannels: c.cout, kernelSize: c.k, stride: c.s, padding: c.p, dilation: c.d)
            for n in [1, 3] {
                let x = Tensor.normal([n, c.cin, c.h, c.w], rng: &rng)
                let o = cfg.outputSize(h: c.h, w: c.w)
                let dy = Tensor.normal([n, c.cout, o.h, o.w], rng: &rng)
                let ref = Reference.conv2dBackwardWeight(dy, input: x, config: cfg)
                // dY with a halo reaches the 16-lane row kernels (3-wide stride-1 taps); without, the tiles.
                for (threads, dyHalo) in [(1, 0), (2, 0), (3, 0), (1, 1), (2, 1), (3, 2)] {
                    let got = BlockedConvWeightGradient.compute(input: BlockedBuffer(x, halo: c.p),
                                                               gradOutput: BlockedBuffer(dy, halo: dyHalo),
                                                               config: cfg, threads: threads, options: options)
                    assertClose(got, ref, tol: 3e-6, "\(c) n=\(n) threads=\(threads) dY halo \(dyHalo) \(options)")
                }
            }
        }
        }
    }
}

/// Every entry of the kernel-variant table that `dynbench kernels --cases catalog` times:
/// forward, input-gradient and weight-gradient kernels against their `Reference` twins, and the
/// same bits for 1 and 2 threads.
final class ConvVariantCatalogTests: XCTestCase {
    func testEveryCatalogVariantMatchesReference() {
        XCTAssertEqual(ConvVariant.catalog.count, 3 * 14)
        forEachKernelWidth { options in
            for v in ConvVariant.catalog {
                XCTAssertEqual(ConvVariant(name: v.name), v, "name round trip \(v)")
                let (fast, reference) = v.check(batch: 2, threads: 1, options: options)
                assertClose(fast, reference, tol: 2e-5, "\(v) [\(v.kernelName(options: options))]")
                XCTAssertEqual(v.check(batch: 2, threads: 2, options: options).fast.scalars, fast.scalars, "\(v) depends on the thread count")
            }
        }
    }

    /// Which microkernel each ResNet pass runs, per width: the row kernels where taps are 3 wide at
    /// stride 1 and rows long enough, 16-channel variants for a single pair of blocks.
    func testKernelNamesFollowTheShapes() {
        let expected: [(String, String, String)] = [
            ("conv3x3_c16_k16_32x32", "f32-conv-nchw8c-6x16", "f32-conv-nchw8c-winograd2x2-12x16"),
            ("conv3x3_c64_k64_8x8", "f32-conv-nchw8c-6x16", "f32-conv-nchw8c-winograd2x2-12x32"),
            ("conv3x3_c64_k64_7x7", "f32-conv-nchw8c-6x16", "f32-conv-nchw8c-8x32"),          // odd: direct
            ("conv3x3_c24_k32_16x16", "f32-conv-nchw8c-6x16", "f32-conv-nchw8c-row8x32"),     // 24 channels: direct
            ("conv3x3s2_c16_k32_32x32", "f32-conv-nchw8c-6x16", "f32-conv-nchw8c-8x32"),
            ("conv3x3_c3_k16_32x32", "f32-conv-im2col-6x16", "f32-conv-im2col-8x16"),
            ("dgrad3x3_c16_k16_32x32", "f32-convdgrad-nchw8c-6x16", "f32-convdgrad-nchw8c-winograd2x2-12x16"),
            ("dgrad3x3s2_c16_k32_32x32", "f32-convdgrad-nchw8c-6x16", "f32-convdgrad-nchw8c-8x16"),
            ("wgrad3x3_c16_k16_32x32", "f32-convwgrad-nchw8c-6x16", "f32-convwgrad-nchw8c-row8x16"),
            ("wgrad3x3_c64_k64_32x32", "f32-convwgrad-nchw8c-6x16", "f32-convwgrad-nchw8c-row4x32"),
            ("wgrad3x3_c64_k64_8x8", "f32-convwgrad-nchw8c-6x16", "f32-convwgrad-nchw8c-12x32"),
        ]
        for (name, narrow, wide) in expected {
            let v = ConvVariant(name: name)!
            XCTAssertEqual(v.kernelName(options: KernelOptions(width: .simd8)), narrow, name)
            XCTAssertEqual(v.kernelName(options: KernelOptions(width: .simd16)), wide, name)
        }
        // Without Winograd, the 3×3 stride-1 passes run on the row kernels.
        for (name, wide) in [("conv3x3_c16_k16_32x32", "f32-conv-nchw8c-row16x16"), ("conv3x3_c64_k64_8x8", "f32-conv-nchw8c-row8x32"),
                             ("dgrad3x3_c16_k16_32x32", "f32-convdgrad-nchw8c-row16x16")] {
            XCTAssertEqual(ConvVariant(name: name)!.kernelName(options: KernelOptions(width: .simd16, winograd: false)), wide, name)
        }
    }

    func testNamesParseStrictly() {
        XCTAssertEqual(ConvVariant(name: "wgrad1x1s2_c16_k32_32x32")?.config,
                       Conv2DConfig(inChannels: 16, outChannels: 32, kernelSize: 1, stride: 2))
        XCTAssertEqual(ConvVariant(name: "dgrad3x3_c8_k8_4x5")?.pass, .inputGradient)
        for bad in ["conv3x3_c0_k8_4x4", "conv3x3_c8_k8_4", "pool3x3_c8_k8_4x4", "conv3x3s0_c8_k8_4x4", "conv3x3s2_c8_k8_0x4"] {
            XCTAssertNil(ConvVariant(name: bad), bad)
        }
    }
}

/// Σy and Σy² gathered by the convolution kernels' epilogues (`ConvMoments`) against the same
/// sums over the finished output: row kernels (16- and 8-pixel tiles, a trailing pair, an
/// overlapping last tile), pixel tables (stride 2, 1×1), both widths, the same bits for 1–3 threads.
final class ConvMomentsTests: XCTestCase {
    func testMomentsMatchTheOutput() {
        var rng = SeededRNG(seed: 31)
        forEachKernelWidth { options in
            // The last two take the Winograd route at 16 lanes (12 × 16 and 12 × 32 GEMMs).
            for (cin, cout, k, s, p, size) in [(8, 16, 3, 1, 1, 19), (16, 40, 3, 1, 1, 11), (9, 24, 3, 2, 1, 9),
                                               (16, 8, 1, 1, 0, 5), (8, 64, 3, 1, 1, 8), (16, 16, 3, 1, 1, 4),
                                               (32, 48, 3, 1, 1, 6)] {
                let cfg = Conv2DConfig(inChannels: cin, outChannels: cout, kernelSize: k, stride: s, padding: p)
                let conv = BlockedConv2D(weight: Tensor.normal(cfg.weightShape, rng: &rng), bias: nil, config: cfg,
                                         options: options)
                let x = BlockedBuffer(Tensor.normal([3, cin, size, size], rng: &rng), halo: 1)
                var first: [Double]?
                for threads in [1, 2, 3] {
                    let out = BlockedBuffer(conv.outputShape(n: 3, h: size, w: size, halo: 1))
                    let moments = ConvMoments()
                    conv.run(x, into: out, threads: threads, moments: moments)
                    let y = out.toTensor()
                    let (n, c, hw) = (y.shape[0], y.shape[1], y.shape[2] * y.shape[3])
                    var sum = [Double](repeating: 0, count: c), squares = sum
                    for i in 0..<n { for ch in 0..<c { for q in 0..<hw {
                        let v = Double(y.scalars[(i * c + ch) * hw + q])
                        sum[ch] += v; squares[ch] += v * v
                    } } }
                    let got = moments.totals(channels: cout)
                    let scale = Swift.max(1, squares.max() ?? 1)
                    for ch in 0..<c {
                        XCTAssertEqual(got.sum[ch], sum[ch], accuracy: 1e-5 * scale, "Σ \(cin)→\(cout) k\(k) s\(s) \(options) ch\(ch)")
                        XCTAssertEqual(got.sumOfSquares[ch], squares[ch], accuracy: 1e-5 * scale, "Σ² \(cin)→\(cout) \(options) ch\(ch)")
                    }
                    if let first { XCTAssertEqual(first, got.sum + got.sumOfSquares, "thread count \(cin)→\(cout) \(options) t\(threads)") }
                    first = got.sum + got.sumOfSquares
                }
            }
        }
    }

    /// `.gradientSums`: the convolution's output is a batch norm's output gradient g (here with a
    /// residual, as an input gradient has); the epilogue masks g by the ReLU after the batch norm
    /// and sums Σg, Σg·z — the same as `BlockedBatchNorm.gradientSums` on the finished output,
    /// and the same g in memory (masked in place for `.output`, either way for `.recomputed`).
    func testGradientSumsMatchTheBatchNormPass() {
        var rng = SeededRNG(seed: 32)
        forEachKernelWidth { options in
            // (16, 64, 8), (32, 48, 6) and (64, 16, 4) take the Winograd route at 16 lanes.
            for (cin, cout, size) in [(8, 16, 19), (16, 40, 11), (16, 64, 8), (16, 8, 5), (32, 48, 6), (64, 16, 4)] {
                let cfg = Conv2DConfig(inChannels: cin, outChannels: cout, kernelSize: 3, padding: 1)
                let conv = BlockedConv2D(weight: Tensor.normal(cfg.weightShape, rng: &rng), bias: nil, config: cfg,
                                         options: options)
                let x = BlockedBuffer(Tensor.normal([2, cin, size, size], rng: &rng), halo: 1)
                let shape = conv.outputShape(n: 2, h: size, w: size, halo: 1)
                let residual = BlockedBuffer(shape), z = BlockedBuffer(shape), y = BlockedBuffer(shape)
                residual.load(Tensor.normal([2, cout, size, size], rng: &rng))
                z.load(Tensor.normal([2, cout, size, size], rng: &rng))
                y.load(Tensor.normal([2, cout, size, size], rng: &rng).map { Swift.max($0, 0) })
                let scale = (0..<cout).map { _ in Float.random(in: -1...1, using: &rng) }
                let shift = (0..<cout).map { _ in Float.random(in: -0.5...0.5, using: &rng) }
                let relus: [BlockedBatchNorm.ReLU?] = [nil, .output(y), .recomputed(scale: scale, shift: shift)]
                for relu in relus {
                    let expected = BlockedBuffer(shape)
                    conv.run(x, into: expected, residual: residual, threads: 1)
                    let want = BlockedBatchNorm.gradientSums(expected, relu: relu, input: z, threads: 1)
                    var first: [Double]?
                    for threads in [1, 2, 3] {
                        let g = BlockedBuffer(shape)
                        let moments = ConvMoments(.gradientSums(input: z, relu: relu))
                        conv.run(x, into: g, residual: residual, threads: threads, moments: moments)
                        let got = moments.totals(channels: cout)
                        let tag = "\(cin)→\(cout) \(size)² \(options) \(String(describing: relu).prefix(10)) t\(threads)"
                        let bound = 2e-5 * Double(2 * size * size)   // far below one pixel (|g| ~ 10)
                        for ch in 0..<cout {
                            XCTAssertEqual(got.sum[ch], want.sumG[ch], accuracy: bound, "Σg \(tag) ch\(ch)")
                            XCTAssertEqual(got.sumOfSquares[ch], want.sumGZ[ch], accuracy: bound, "Σg·z \(tag) ch\(ch)")
                        }
                        if case .recomputed = relu {
                            // g may stay unmasked in memory; the masked values must agree.
                            let masked = BlockedBuffer(shape)
                            masked.load(g.toTensor())
                            _ = BlockedBatchNorm.gradientSums(masked, relu: .output(Self.mask(z, scale, shift)), input: z, threads: 1)
                            _ = BlockedBatchNorm.gradientSums(expected, relu: .output(Self.mask(z, scale, shift)), input: z, threads: 1)
                            XCTAssertEqual(masked.toTensor().scalars, expected.toTensor().scalars, "g \(tag)")
                        } else {
                            XCTAssertEqual(g.toTensor().scalars, expected.toTensor().scalars, "g \(tag)")
                        }
                        if let first { XCTAssertEqual(first, got.sum + got.sumOfSquares, "thread count \(tag)") }
                        first = got.sum + got.sumOfSquares
                    }
                }
            }
        }
    }

    /// relu(z·scale + shift) as a buffer: its positive entries are the recomputed mask.
    static func mask(_ z: BlockedBuffer, _ scale: [Float], _ shift: [Float]) -> BlockedBuffer {
        let out = BlockedBuffer(z.shape)
        BlockedBatchNorm.normalize(z, scale: scale, shift: shift, activation: .relu, into: out, threads: 1)
        return out
    }
}

/// Winograd F(2×2, 3×3) (16 lanes; 3×3 stride-1 pad-1 convolutions with 16, 32 or 64 input
/// channels and even output sizes) against `Reference` and against the direct kernels:
/// partial tile blocks, a trailing 16-channel pair, bias, residual (also in place), clamps, and
/// the input gradient (its stride-1 phase is such a convolution).
final class WinogradTests: XCTestCase {
    func testWinogradMatchesReferenceAndDirectKernels() {
        var rng = SeededRNG(seed: 41)
        let wide = KernelOptions(width: .simd16), direct = KernelOptions(width: .simd16, winograd: false)
        do {
            for (cin, cout, h, w) in [(16, 16, 4, 6), (16, 32, 8, 8), (32, 48, 6, 4), (64, 64, 8, 8), (64, 16, 2, 2), (32, 32, 16, 14)] {
                let cfg = Conv2DConfig(inChannels: cin, outChannels: cout, kernelSize: 3, padding: 1)
                XCTAssertTrue(ConvVariant(name: "conv3x3_c\(cin)_k\(cout)_\(h)x\(w)")!.kernelName(options: wide).contains("winograd"))
                let wt = Tensor.normal(cfg.weightShape, rng: &rng), b = Tensor.normal([cout], rng: &rng)
                let conv = BlockedConv2D(weight: wt, bias: b, config: cfg, options: wide)
                let directConv = BlockedConv2D(weight: wt, bias: b, config: cfg, options: direct)
                for n in [1, 3] {
                    let x = Tensor.normal([n, cin, h, w], rng: &rng), r = Tensor.normal([n, cout, h, w], rng: &rng)
                    let ref = Reference.conv2d(x, weight: wt, bias: b, config: cfg)
                    let tag = "\(cin)→\(cout) \(h)×\(w) n\(n)"
                    for threads in [1, 2, 3] { assertClose(conv(x, threads: threads), ref, tol: 2e-6, "\(tag) t\(threads)") }
                    let expect = Reference.activation(Reference.add(ref, r), .relu)
                    assertClose(conv(x, residual: r, activation: .relu, threads: 2), expect, tol: 2e-6, "\(tag) residual")
                    assertClose(directConv(x, residual: r, activation: .relu, threads: 2), expect, tol: 2e-6, "\(tag) direct")
                    // In place: the residual buffer is the output.
                    let io = BlockedBuffer(r, halo: 1)
                    conv.run(BlockedBuffer(x, halo: 1), into: io, residual: io, activation: .relu, threads: 2)
                    assertClose(io.toTensor(), expect, tol: 2e-6, "\(tag) in place")
                    XCTAssertTrue(io.haloIsZero, "\(tag) wrote into the halo")
                }
                // The input gradient of the transposed shape runs the same route.
                let back = Conv2DConfig(inChannels: cout, outChannels: cin, kernelSize: 3, padding: 1)
                let wb = Tensor.normal(back.weightShape, rng: &rng)
                let dy = Tensor.normal([2, cin, h, w], rng: &rng)
                let dx = BlockedBuffer(BlockedShape(n: 2, c: cout, h: h, w: w, halo: 1))
                BlockedConvInputGradient(weight: wb, config: back, options: wide).run(BlockedBuffer(dy, halo: 1), into: dx, threads: 2)
                assertClose(dx.toTensor(), Reference.conv2dBackwardInput(dy, weight: wb, config: back, inputHeight: h, inputWidth: w),
                            tol: 2e-6, "input gradient \(cout)→\(cin) \(h)×\(w)")
            }
        }
    }

}

private extension BlockedConv2D {
    func kernelNameForTest(outputWidth: Int, outputHeight: Int) -> String {
        BlockedConv2D.kernelName(for: config, outputWidth: outputWidth, outputHeight: outputHeight, options: options)
    }
}
