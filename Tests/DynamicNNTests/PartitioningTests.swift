import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicNN
import TestSupport
import XCTest

/// Batch partitioning: a block run for some samples only (`updatingRows`) against the dense
/// block on the same samples, for every batch shape the edge cases reach; its cost per sample;
/// its training step against the block run on the sub-batch alone.
final class PartitioningTests: XCTestCase {
    private func block(seed: UInt64) -> BasicBlock {
        var rng = SeededRNG(seed: seed)
        let b = BasicBlock(16, 16, stride: 1, rng: &rng)
        for bn in [b.bn1, b.bn2] {
            bn.weight.value = Tensor.uniform(bn.weight.shape, low: 0.5, high: 1.5, rng: &rng)
            bn.bias.value = Tensor.normal(bn.bias.shape, std: 0.2, rng: &rng)
            bn.runningMean.value = Tensor.normal(bn.runningMean.shape, std: 0.1, rng: &rng)
            bn.runningVar.value = Tensor.uniform(bn.runningVar.shape, low: 0.5, high: 1.5, rng: &rng)
        }
        return b
    }

    func testPartitionedBlockEqualsDenseOnTheActiveSamples() {
        let b = block(seed: 1).eval()
        var rng = SeededRNG(seed: 2)
        // Two convolutions of 16 → 16 channels on 8 × 8, a ReLU after each.
        let perSample = ComputeCost(macs: 2 * 16 * 16 * 9 * 64, referenceFLOPs: 2 * 16 * 16 * 9 * 64 + 2 * 16 * 64)
        for n in [1, 5, 8] {
            let x = Tensor.normal([n, 16, 8, 8], rng: &rng)
            let dense: Tensor = {
                let e = Engine(threads: 1)
                e.begin(batch: n, recording: false)
                return b(e.input(x)).toTensor()
            }()
            let subsets: [[Int]] = [[], [n - 1], Array(stride(from: 0, to: n, by: 2)), Array((0..<n).reversed()), Array(0..<n)]
            for rows in subsets {
                var first: Tensor?
                for threads in [1, 2, 3] {
                    let e = Engine(threads: threads)
                    e.begin(batch: n, recording: false)
                    let y = e.input(x).updatingRows(rows) { b($0) }.toTensor()
                    let tag = "n=\(n) rows=\(rows) threads=\(threads)"
                    for r in 0..<n {
                        let want = rows.contains(r) ? dense.batch(r) : x.batch(r)
                        assertClose(y.batch(r), want, tol: 1e-5, "\(tag) sample \(r)")
                        XCTAssertEqual(e.sampleCosts[r], rows.contains(r) ? perSample : .zero, "\(tag) cost of sample \(r)")
                    }
                    if let first { XCTAssertEqual(y.scalars, first.scalars, "\(tag): depends on the thread count") }
                    first = y
                }
            }
        }
    }

    /// In training, the block run on a sub-batch takes its batch statistics from those samples:
    /// parameter gradients, running statistics and the active rows' input gradients equal the
    /// block run on the sub-batch alone; the other rows' gradients pass through unchanged.
    func testTrainingOnASubBatchEqualsTheSubBatchAlone() throws {
        let partitioned = block(seed: 3).train(), alone = block(seed: 3).train()
        var rng = SeededRNG(seed: 4)
        let x = Tensor.normal([6, 16, 8, 8], rng: &rng)
        let seed = Tensor.normal([6, 16 * 64], rng: &rng)
        let rows = [4, 1, 5]
        let e = Engine(threads: 2)
        e.begin(batch: 6, recording: true)
        let input = e.input(x, requiresGradient: true)
        let y = input.updatingRows(rows) { partitioned($0) }.flattened()
        e.backward(y, gradient: seed)

        let sub = Tensor.concatBatch(rows.map { x.batch($0) })
        let subSeed = Tensor.concatBatch(rows.map { seed.batch($0) })
        let e2 = Engine(threads: 2)
        e2.begin(batch: 3, recording: true)
        let input2 = e2.input(sub, requiresGradient: true)
        e2.backward(alone(input2).flattened(), gradient: subSeed)

        for ((key, p), (_, q)) in zip(partitioned.namedParameters(), alone.namedParameters()) {
            if let g = p.grad { assertClose(g, q.grad!, tol: 1e-5, "gradient of \(key)") }
            if key.hasPrefix("bn") && key.contains("running") { assertClose(p.value, q.value, tol: 1e-6, key) }
        }
        let dx = try XCTUnwrap(input.gradient), dxAlone = try XCTUnwrap(input2.gradient)
        for r in 0..<6 {
            if let i = rows.firstIndex(of: r) {
                assertClose(dx.batch(r), dxAlone.batch(i), tol: 1e-5, "input gradient of active sample \(r)")
            } else {
                XCTAssertEqual(dx.batch(r).scalars, seed.batch(r).reshaped([1, 16, 8, 8]).scalars, "skipped sample \(r) passes its gradient")
            }
        }
    }

    func testReplacingConsumesTheMapOutsideARecording() {
        let e = Engine(threads: 1)
        e.begin(batch: 3, recording: false)
        var rng = SeededRNG(seed: 5)
        let x = e.input(Tensor.normal([3, 8, 4, 4], rng: &rng))
        let u = x.gathering(rows: [2])
        let before = x.blocked().pointer
        let y = x.replacing(rows: [2], with: u.adding(u))
        XCTAssertEqual(y.blocked().pointer, before, "the update is written into the consumed map's buffer")
        XCTAssertEqual(y.samples, nil)
    }
}

/// The checks every adaptive network's policy goes through.
final class PolicyErrorTests: XCTestCase {
    func testPerUnitValuesAreChecked() {
        func error(_ values: [Float], count: Int, range: ClosedRange<Float> = -Float.infinity...Float.infinity) -> PolicyError? {
            do { try PolicyError.check(values, "block gates", count: count, range: range); return nil } catch { return error }
        }
        XCTAssertNil(error([0, 0.5, 1], count: 3, range: 0...1))
        XCTAssertEqual(error([0, 0.5], count: 3, range: 0...1), .wrongCount(what: "block gates", expected: 3, found: 2))
        XCTAssertEqual(error([0, .nan, 1], count: 3), .notANumber(what: "block gates", index: 1))
        XCTAssertEqual(error([0, 1.5, 1], count: 3, range: 0...1), .outOfRange(what: "block gates", index: 1, value: 1.5, range: "0.0...1.0"))
        XCTAssertEqual(PolicyError.budgetBelowCheapest(budget: 1, cheapest: 2, unit: "MFLOPs").description,
                       "budget 1.0 MFLOPs is below the cheapest way to run the network (2.0 MFLOPs)")
    }
}
