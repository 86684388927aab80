import DynamicCore
import TestSupport
import XCTest

/// The engine's layout, elementwise, resize and pooling-backward kernels on NCHW8c buffers
/// against their NCHW reference twins: odd channel counts, offsets inside blocks, halos 1 and 2,
/// 1 and 3 threads. Every result's halo must stay zero.
final class BlockedDataMovementTests: XCTestCase {
    private func blocked(_ t: Tensor, halo: Int = 1) -> BlockedBuffer { BlockedBuffer(t, halo: halo) }


    func testCopyChannelsAtAnyOffset() {
        var rng = SeededRNG(seed: 1)
        let parts = [6, 6, 5, 16, 3].map { Tensor.normal([3, $0, 4, 5], rng: &rng) }
        let reference = Ops.concatChannels(parts)
        for threads in [1, 3] {
            let y = BlockedBuffer(BlockedShape(n: 3, c: 36, h: 4, w: 5, halo: 1))
            var at = 0
            for p in parts {
                BlockedOps.copyChannels(blocked(p, halo: 2), 0..<p.shape[1], into: y, at: at, threads: threads)
                at += p.shape[1]
            }
            XCTAssertEqual(y.toTensor().scalars, reference.scalars, "concat, \(threads) threads")
            XCTAssertTrue(y.haloIsZero)
            for range in [0..<36, 5..<19, 8..<16, 17..<18] {
                let s = BlockedBuffer(BlockedShape(n: 3, c: range.count, h: 4, w: 5, halo: 1))
                BlockedOps.copyChannels(y, range, into: s, at: 0, threads: threads)
                XCTAssertEqual(s.toTensor().scalars, Ops.sliceChannels(reference, range).scalars, "slice \(range)")
                // Accumulating a slice back adds it onto those channels only.
                let acc = blocked(reference)
                BlockedOps.copyChannels(s, 0..<range.count, into: acc, at: range.lowerBound, accumulate: true, threads: threads)
                var expected = reference
                expected.withUnsafeMutableBufferPointer { e in
                    for n in 0..<3 { for c in range { for i in 0..<20 { e[(n * 36 + c) * 20 + i] *= 2 } } }
                }
                XCTAssertEqual(acc.toTensor().scalars, expected.scalars, "accumulate \(range)")
                XCTAssertTrue(acc.haloIsZero)
            }
        }
    }

    func testImageGatherAndScatter() {
        var rng = SeededRNG(seed: 2)
        let x = Tensor.normal([5, 11, 3, 4], rng: &rng)
        let bx = blocked(x)
        for threads in [1, 3] {
            let rows = [4, 0, 3]
            let g = BlockedBuffer(BlockedShape(n: 3, c: 11, h: 3, w: 4, halo: 1))
            BlockedOps.copyImages(bx, rows: rows, into: g, threads: threads)
            XCTAssertEqual(g.toTensor().scalars, Tensor.concatBatch(rows.map { x.batch($0) }).scalars)
            let y = blocked(x)
            BlockedOps.scatterImages(g, rows: rows, into: y, accumulate: true, threads: threads)
            let expected = Tensor.concatBatch((0..<5).map { rows.contains($0) ? x.batch($0) * 2 : x.batch($0) })
            XCTAssertEqual(y.toTensor().scalars, expected.scalars)
            BlockedOps.scatterImages(g, rows: [1, 2, 3], into: y, threads: threads)
            XCTAssertEqual(y.toTensor().batch(1).scalars, x.batch(4).scalars)
            XCTAssertTrue(y.haloIsZero)
        }
    }

    func testElementwiseKernels() {
        var rng = SeededRNG(seed: 3)
        let a = Tensor.normal([3, 13, 4, 6], rng: &rng), b = Tensor.normal([3, 13, 4, 6], rng: &rng)
        for threads in [1, 3] {
            for act in [Activation.identity, .relu, .relu1] {
                let y = BlockedBuffer(blocked(a).shape)
                BlockedOps.add(blocked(a), blocked(b), activation: act, into: y, threads: threads)
                XCTAssertEqual(y.toTensor().scalars, Ops.add(a, b, activation: act).scalars, "add \(act)")
                XCTAssertTrue(y.haloIsZero)
                // The clamp's gradient from its output, against the activation's gradient from its input.
                let g = blocked(b)
                BlockedOps.clampBackward(g, output: y, activation: act, threads: threads)
                XCTAssertEqual(g.toTensor().scalars, Ops.activationBackward(b, input: a + b, act).scalars, "clamp backward \(act)")
            }
            let perChannel = Tensor.normal([3, 13], rng: &rng).scalars, perSample = [0.5, -2, 3] as [Float]
            for factors in [perChannel, perSample] {
                let y = BlockedBuffer(blocked(a).shape)
                BlockedOps.scale(blocked(a), by: factors, into: y, threads: threads)
                var expected = a
                expected.withUnsafeMutableBufferPointer { e in
                    for i in 0..<e.count {
                        let (n, c) = (i / (13 * 24), (i / 24) % 13)
                        e[i] *= factors.count == 3 ? factors[n] : factors[n * 13 + c]
                    }
                }
                XCTAssertEqual(y.toTensor().scalars, expected.scalars, "scale by \(factors.count)")
            }
            let sums = BlockedOps.scaleGradient(blocked(a), input: blocked(b), threads: threads)
            let channelSums = BlockedOps.channelSums(blocked(a), threads: threads)
            for n in 0..<3 {
                for c in 0..<13 {
                    var s = 0.0
                    for i in 0..<24 { s += Double(a[n, c, i / 6, i % 6]) * Double(b[n, c, i / 6, i % 6]) }
                    XCTAssertEqual(Double(sums[n * 13 + c]), s, accuracy: 1e-4)
                }
            }
            for c in 0..<13 {
                var s = 0.0
                for n in 0..<3 { for i in 0..<24 { s += Double(a[n, c, i / 6, i % 6]) } }
                XCTAssertEqual(Double(channelSums[c]), s, accuracy: 1e-4)
            }
            let sum = blocked(a)
            BlockedOps.addInPlace(sum, blocked(b), threads: threads)
            XCTAssertEqual(sum.toTensor().scalars, (a + b).scalars)
            let wide = BlockedBuffer(BlockedShape(n: 3, c: 13, h: 4, w: 6, halo: 3))
            BlockedOps.copyInterior(sum, into: wide, threads: threads)
            XCTAssertEqual(wide.toTensor().scalars, (a + b).scalars)
            BlockedOps.zeroInterior(wide, threads: threads)
            XCTAssertEqual(wide.toTensor().scalars, [Float](repeating: 0, count: a.count))
            XCTAssertTrue(wide.haloIsZero)
        }
    }

    func testResizeMatchesNCHW() {
        var rng = SeededRNG(seed: 4)
        let x = Tensor.normal([2, 10, 5, 7], rng: &rng)
        for (h, w) in [(9, 13), (3, 4), (1, 1), (5, 7), (2, 9)] {
            for threads in [1, 3] {
                let y = BlockedBuffer(BlockedShape(n: 2, c: 10, h: h, w: w, halo: 1))
                BlockedOps.resizeBilinearAlignCorners(blocked(x), into: y, threads: threads)
                assertClose(y.toTensor(), Reference.resizeBilinearAlignCorners(x, height: h, width: w), tol: 1e-6, "resize \(h)×\(w)")
                let g = Tensor.normal([2, 10, h, w], rng: &rng)
                let dx = BlockedBuffer(blocked(x).shape)
                BlockedOps.resizeBilinearAlignCornersBackward(blocked(g), into: dx, threads: threads)
                assertClose(dx.toTensor(), Ops.resizeBilinearAlignCornersBackward(g, inputHeight: 5, inputWidth: 7), tol: 1e-6,
                            "resize backward \(h)×\(w)")
                XCTAssertTrue(y.haloIsZero && dx.haloIsZero)
            }
        }
    }

    func testPoolBackwardMatchesNCHW() {
        var rng = SeededRNG(seed: 5)
        let x = Tensor.normal([2, 9, 7, 6], rng: &rng)
        for p in [Pool2DConfig(kernelSize: 2), Pool2DConfig(kernelSize: 3, stride: 2, padding: 1),
                  Pool2DConfig(kernelSize: 3, stride: 1, padding: 1, countIncludePad: false)] {
            let o = p.outputSize(h: 7, w: 6)
            let g = Tensor.normal([2, 9, o.h, o.w], rng: &rng)
            for threads in [1, 3] {
                let dx = BlockedBuffer(blocked(x).shape)
                BlockedOps.poolBackward(blocked(g), input: blocked(x), into: dx, p, isMax: true, threads: threads)
                XCTAssertEqual(dx.toTensor().scalars, Reference.maxPool2dBackward(g, input: x, p).scalars, "max \(p)")
                BlockedOps.poolBackward(blocked(g), input: nil, into: dx, p, isMax: false, threads: threads)
                assertClose(dx.toTensor(), Reference.avgPool2dBackward(g, inputShape: x.shape, p), tol: 1e-6, "avg \(p)")
                XCTAssertTrue(dx.haloIsZero)
            }
        }
    }
}
