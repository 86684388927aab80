import DynamicCore
import XCTest

final class TensorTests: XCTestCase {
    func testShapeAndIndexing() {
        var t = Tensor(shape: [2, 3], scalars: [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(t.count, 6)
        XCTAssertEqual(t[1, 2], 6)
        t[0, 1] = 10
        XCTAssertEqual(t.scalars, [1, 10, 3, 4, 5, 6])
        XCTAssertEqual(t.reshaped([3, -1]).shape, [3, 2])
        XCTAssertEqual(Tensor(3).shape, [])
        XCTAssertEqual(Tensor(3).count, 1)
    }

    func testCopyOnWriteAndViews() {
        let a = Tensor(shape: [4, 2], scalars: (0..<8).map(Float.init))
        var b = a
        b[0, 0] = 100
        XCTAssertEqual(a[0, 0], 0, "mutating a copy must not change the original")
        let v = a.batch(1..<3)
        XCTAssertEqual(v.shape, [2, 2])
        XCTAssertEqual(v.scalars, [2, 3, 4, 5])
        var w = v
        w[0, 0] = -1
        XCTAssertEqual(a[1, 0], 2, "mutating a view copies it")
        XCTAssertEqual(w.scalars, [-1, 3, 4, 5])
        XCTAssertEqual(Tensor.concatBatch([a.batch(0), a.batch(3)]).scalars, [0, 1, 6, 7])
    }

    func testFlippedHorizontallyMirrorsEachRowOfAView() {
        // A batch view (non-zero offset) of a [3, 2, 2, 3] tensor: image 1's rows reversed.
        let a = Tensor(shape: [3, 2, 2, 3], scalars: (0..<36).map(Float.init))
        let f = a.batch(1..<2).flippedHorizontally()
        XCTAssertEqual(f.shape, [1, 2, 2, 3])
        XCTAssertEqual(f.scalars, [14, 13, 12, 17, 16, 15, 20, 19, 18, 23, 22, 21])
        XCTAssertEqual(f.flippedHorizontally().scalars, a.batch(1).scalars)
    }

    func testElementwiseMatchesReference() {
        var rng = SeededRNG(seed: 1)
        for n in [1, 7, 8, 9, 16, 23, 100] {
            let a = Tensor.normal([n], rng: &rng), b = Tensor.normal([n], rng: &rng)
            XCTAssertEqual((a + b).scalars, zip(a.scalars, b.scalars).map(+))
            XCTAssertEqual((a * b).scalars, zip(a.scalars, b.scalars).map(*))
            XCTAssertEqual((a * 3).scalars, a.scalars.map { $0 * 3 })
            XCTAssertEqual((a - b).scalars, zip(a.scalars, b.scalars).map(-))
            var c = a
            c += b
            XCTAssertEqual(c.scalars, (a + b).scalars)
            for act in [Activation.identity, .relu, .relu1, .leakyRelu1(slope: 0.1)] {
                let x = a * 2
                XCTAssertEqual(Ops.activation(x, act).scalars, Reference.activation(x, act).scalars, "\(act) n=\(n)")
                XCTAssertEqual(Ops.add(a, b, activation: act).scalars, Reference.add(a, b, activation: act).scalars)
            }
        }
    }

    func testActivationDefinitions() {
        let x = Tensor(shape: [5], scalars: [-2, 0, 0.5, 1, 3])
        XCTAssertEqual(Ops.relu1(x).scalars, [0, 0, 0.5, 1, 1])
        XCTAssertEqual(Ops.leakyRelu1(x, slope: 0.1).scalars, [-0.2, 0, 0.5, 1, 1.2])
        XCTAssertEqual(Ops.relu(x).scalars, [0, 0, 0.5, 1, 3])
    }

    func testArgmaxAndComparisons() {
        let t = Tensor(shape: [2, 3], scalars: [1, 5, 2, 9, 0, 9])
        XCTAssertEqual(t.argmax(), [1, 0])
        XCTAssertTrue(t.isClose(to: t + Tensor(shape: [2, 3], repeating: 1e-7)))
        XCTAssertFalse(t.isClose(to: t + Tensor(shape: [2, 3], repeating: 1e-2)))
        XCTAssertEqual(t.maxAbsDifference(t * 2), 9)
    }

    func testSeededRandomIsReproducibleAndHasRightMoments() {
        var r1 = SeededRNG(seed: 42), r2 = SeededRNG(seed: 42)
        let a = Tensor.normal([10000], rng: &r1), b = Tensor.normal([10000], rng: &r2)
        XCTAssertEqual(a.scalars, b.scalars)
        XCTAssertEqual(a.mean(), 0, accuracy: 0.05)
        let variance = (a * a).mean()
        XCTAssertEqual(variance, 1, accuracy: 0.05)
        let u = Tensor.uniform([10000], low: -2, high: 2, rng: &r1)
        XCTAssert(u.min() >= -2 && u.max() < 2)
        // kaiming_normal(fan_out) for [64, 16, 3, 3]: std = sqrt(2 / (64·9)).
        let k = Tensor.kaimingNormal([64, 16, 3, 3], mode: .fanOut, rng: &r1)
        XCTAssertEqual((k * k).mean().squareRoot(), (2.0 / 576.0).squareRoot(), accuracy: 0.005)
        // PyTorch's default conv init bound is 1/sqrt(fan_in).
        let ku = Tensor.kaimingUniform([8, 4, 3, 3], a: Float(5).squareRoot(), rng: &r1)
        XCTAssert(ku.max() <= 1 / Float(36).squareRoot() && ku.max() > 0.9 / Float(36).squareRoot())
    }
}

final class ThreadPoolTests: XCTestCase {
    func testEveryTaskRunsExactlyOnceIncludingNestedAndConcurrentCalls() {
        for threads in [1, 2, 3, 8] {
            for tasks in [0, 1, 2, 7, 100] {
                var hits = [Int](repeating: 0, count: tasks)
                hits.withUnsafeMutableBufferPointer { h in
                    let hp = UncheckedBox(h.baseAddress!)
                    Parallel.forEach(tasks, threads: threads) { i in
                        // Nested parallel call inside a job runs inline instead of deadlocking.
                        Parallel.forEach(3, threads: threads) { _ in }
                        hp.value[i] += 1
                    }
                }
                XCTAssertEqual(hits, [Int](repeating: 1, count: tasks), "threads \(threads) tasks \(tasks)")
            }
        }
        // Two threads submitting at once.
        let group = DispatchGroup()
        let totals = UncheckedBox(UnsafeMutablePointer<Int>.allocate(capacity: 2))
        totals.value.initialize(repeating: 0, count: 2)
        for k in 0..<2 {
            DispatchQueue.global().async(group: group) {
                for _ in 0..<200 {
                    let counts = UnsafeMutablePointer<Int>.allocate(capacity: 16)
                    counts.initialize(repeating: 0, count: 16)
                    let c = UncheckedBox(counts)
                    Parallel.forEach(16, threads: 2) { i in c.value[i] = 1 }
                    totals.value[k] += (0..<16).reduce(0) { $0 + counts[$1] }
                    counts.deallocate()
                }
            }
        }
        group.wait()
        XCTAssertEqual(totals.value[0], 3200)
        XCTAssertEqual(totals.value[1], 3200)
        totals.value.deallocate()
    }
}

struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
