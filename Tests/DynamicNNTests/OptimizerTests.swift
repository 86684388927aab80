import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

/// Optimizer semantics beyond the PyTorch fixtures: state round trips, skipped parameters,
/// typed errors, schedule composition.
final class OptimizerTests: XCTestCase {
    func makeParameters(seed: UInt64) -> [Parameter] {
        var rng = SeededRNG(seed: seed)
        return [Parameter(Tensor.normal([3, 2], rng: &rng)), Parameter(Tensor.normal([4], rng: &rng))]
    }

    func gradients(step: Int) -> [Tensor] {
        var rng = SeededRNG(seed: 100 + UInt64(step))
        return [Tensor.normal([3, 2], rng: &rng), Tensor.normal([4], rng: &rng)]
    }

    /// k steps, state exported into a fresh optimizer over copied parameters, m more steps:
    /// bit-identical to k + m uninterrupted steps.
    func checkStateRoundTrip(_ make: ([Parameter]) -> any Optimizer) throws {
        let straight = makeParameters(seed: 1)
        let a = make(straight)
        for s in 0..<5 {
            for (p, g) in zip(straight, gradients(step: s)) { p.grad = g }
            a.step()
        }
        let first = makeParameters(seed: 1)
        let b = make(first)
        for s in 0..<2 {
            for (p, g) in zip(first, gradients(step: s)) { p.grad = g }
            b.step()
        }
        let resumed = first.map { Parameter($0.value) }
        let c = make(resumed)
        try c.loadStateDict(b.stateDict())
        for s in 2..<5 {
            for (p, g) in zip(resumed, gradients(step: s)) { p.grad = g }
            c.step()
        }
        for (x, y) in zip(straight, resumed) { XCTAssertEqual(x.value.scalars, y.value.scalars) }
    }

    func testStateRoundTripsBitExactly() throws {
        try checkStateRoundTrip { SGD($0, learningRate: 0.1, momentum: 0.9, weightDecay: 1e-4, nesterov: true) }
        try checkStateRoundTrip { SGD($0, learningRate: 0.1, momentum: 0.9) }
        try checkStateRoundTrip { Adam($0, learningRate: 0.01, weightDecay: 0.01) }
        try checkStateRoundTrip { Adam.adamW($0, learningRate: 0.01) }
    }

    func testParametersWithoutGradientAreSkippedAndKeepNoState() {
        let ps = makeParameters(seed: 2)
        let p0 = ps[0].value, before = ps[1].value.scalars
        let sgd = SGD(ps, learningRate: 0.1, momentum: 0.9)
        let g = gradients(step: 0)[0]
        ps[0].grad = g
        sgd.step()
        XCTAssertEqual(ps[1].value.scalars, before)
        XCTAssertEqual(Set(sgd.stateDict().keys), ["0.momentum_buffer"])
        // First step: buf = grad, so p moves by exactly lr·grad.
        XCTAssertEqual(ps[0].value.scalars, p0.zipMap(g) { $0 - 0.1 * $1 }.scalars)
        let adam = Adam(ps, learningRate: 0.01)
        ps[0].grad = nil
        ps[1].grad = Tensor(shape: [4], repeating: 3)
        adam.step()
        XCTAssertEqual(Set(adam.stateDict().keys), ["1.exp_avg", "1.exp_avg_sq", "1.step"])
        // Adam's first step moves every coordinate by lr (sign of the gradient), up to eps.
        for (a, b) in zip(ps[1].value.scalars, before) { XCTAssertEqual(a, b - 0.01, accuracy: 1e-6) }
    }

    func testLearningRateScaleAndGroups() {
        let ps = makeParameters(seed: 3)
        let p0 = ps[0].value.scalars, p1 = ps[1].value.scalars
        let sgd = SGD(groups: [ParameterGroup([ps[0]], learningRate: 0.1), ParameterGroup([ps[1]], learningRate: 1, weightDecay: 0.5)])
        sgd.learningRateScale = 0.5
        ps[0].grad = Tensor(shape: [3, 2], repeating: 1)
        ps[1].grad = Tensor(zeros: [4])
        sgd.step()
        for (a, b) in zip(ps[0].value.scalars, p0) { XCTAssertEqual(a, b - 0.05, accuracy: 1e-6) }
        // Weight decay alone: p −= lr·wd·p.
        for (a, b) in zip(ps[1].value.scalars, p1) { XCTAssertEqual(a, b - 0.5 * 0.5 * b, accuracy: 1e-6) }
    }

    func testMalformedStateGivesTypedErrors() {
        let ps = makeParameters(seed: 4)
        let sgd = SGD(ps, learningRate: 0.1, momentum: 0.9)
        XCTAssertThrowsError(try sgd.loadStateDict(["0.exp_avg": Tensor(zeros: [3, 2])])) {
            XCTAssertEqual($0 as? OptimizerStateError, .unexpectedKey("0.exp_avg"))
        }
        XCTAssertThrowsError(try sgd.loadStateDict(["7.momentum_buffer": Tensor(zeros: [3, 2])])) {
            XCTAssertEqual($0 as? OptimizerStateError, .unexpectedKey("7.momentum_buffer"))
        }
        XCTAssertThrowsError(try sgd.loadStateDict(["1.momentum_buffer": Tensor(zeros: [3])])) {
            XCTAssertEqual($0 as? OptimizerStateError, .shapeMismatch(key: "1.momentum_buffer", expected: [4], found: [3]))
        }
        let adam = Adam(ps)
        XCTAssertThrowsError(try adam.loadStateDict(["0.exp_avg": Tensor(zeros: [3, 2])]))
    }

    func testScheduleComposition() {
        let warm = LRSchedule.warmup(steps: 5, startFactor: 0.2, then: .multiStep(milestones: [10], gamma: 0.1))
        XCTAssertEqual(warm.factor(at: 0), 0.2, accuracy: 1e-12)
        XCTAssertEqual(warm.factor(at: 4), 0.2 + 0.8 * 4 / 5, accuracy: 1e-12)
        XCTAssertEqual(warm.factor(at: 5), 1, accuracy: 1e-12)
        XCTAssertEqual(warm.factor(at: 14), 1, accuracy: 1e-12)
        XCTAssertEqual(warm.factor(at: 15), 0.1, accuracy: 1e-12)   // milestone 10 counted after the warm-up
        let chained = LRSchedule.product(.linear(startFactor: 0.5, endFactor: 1, steps: 2), .multiStep(milestones: [1], gamma: 0.1))
        XCTAssertEqual(chained.factor(at: 0), 0.5, accuracy: 1e-12)
        XCTAssertEqual(chained.factor(at: 1), 0.075, accuracy: 1e-12)
        XCTAssertEqual(chained.factor(at: 3), 0.1, accuracy: 1e-12)
        XCTAssertEqual(LRSchedule.cosine(steps: 4, minFactor: 0).factor(at: 2), 0.5, accuracy: 1e-12)
        XCTAssertEqual(LRSchedule.constant.factor(at: 1000), 1)
    }

    func testTimeBudgetRunsTheScheduleOnElapsedTime() {
        let budget = TimeBudget(seconds: 100, warmupSteps: 3)
        let schedule = LRSchedule.warmup(steps: 3, startFactor: 0.01, then: .cosine(steps: TimeBudget.ticks, minFactor: 0))
        // Warm-up counts steps, whatever the clock says.
        XCTAssertEqual(budget.position(step: 1, elapsed: 50, warmupEnd: nil), 1)
        // Warm-up ended at 20 s, 10 s kept back: the main part spans 20…90 s.
        func factor(_ t: Double) -> Double {
            schedule.factor(at: budget.position(step: 10, elapsed: t, warmupEnd: 20, reserve: 10))
        }
        XCTAssertEqual(factor(20), 1, accuracy: 1e-12)
        XCTAssertEqual(factor(55), 0.5, accuracy: 1e-5)          // halfway through the cosine
        XCTAssertEqual(factor(90), 0, accuracy: 1e-12)
        XCTAssertEqual(factor(95), 0, accuracy: 1e-12, "clamped past the end, not periodic")
        XCTAssertEqual(budget.position(step: 10, elapsed: 99, warmupEnd: 20, reserve: 10), 3 + TimeBudget.ticks)
        XCTAssertGreaterThan(factor(40), factor(41))
        XCTAssertFalse(budget.isSpent(elapsed: 89.9, reserve: 10))
        XCTAssertTrue(budget.isSpent(elapsed: 90, reserve: 10))
    }
}
