import Foundation

/// A learning-rate multiplier as a function of the schedule's step count t = 0, 1, 2, …
/// (epochs or iterations, whichever the caller counts), using the closed forms of PyTorch's
/// schedulers; the rate of a group is `group.learningRate · factor(at: t)`. Set it with
/// `optimizer.learningRateScale = schedule.factor(at: t)` before each step.
public indirect enum LRSchedule: Sendable, Equatable {
    /// Factor 1.
    case constant
    /// `MultiStepLR`: γ^(number of milestones ≤ t).
    case multiStep(milestones: [Int], gamma: Double)
    /// `CosineAnnealingLR` with T_max = `steps` and η_min = minFactor·base:
    /// minFactor + (1 − minFactor)·(1 + cos(π·t/steps))/2 (periodic past `steps`, like PyTorch).
    case cosine(steps: Int, minFactor: Double)
    /// `LinearLR`: startFactor at t = 0, linearly to endFactor at t = steps, then endFactor.
    case linear(startFactor: Double, endFactor: Double, steps: Int)
    /// `SequentialLR`: `first` for t < milestone, then `second` at t − milestone.
    case sequential(LRSchedule, LRSchedule, milestone: Int)
    /// `ChainedScheduler`: the product of both factors.
    case product(LRSchedule, LRSchedule)

    public func factor(at t: Int) -> Double {
        precondition(t >= 0, "schedule step must be non-negative")
        switch self {
        case .constant:
            return 1
        case .multiStep(let milestones, let gamma):
            return pow(gamma, Double(milestones.filter { $0 <= t }.count))
        case .cosine(let steps, let minFactor):
            precondition(steps > 0, "cosine schedule needs steps > 0")
            return minFactor + (1 - minFactor) * (1 + cos(Double.pi * Double(t) / Double(steps))) / 2
        case .linear(let start, let end, let steps):
            precondition(steps > 0, "linear schedule needs steps > 0")
            return start + (end - start) * Double(Swift.min(t, steps)) / Double(steps)
        case .sequential(let first, let second, let milestone):
            return t < milestone ? first.factor(at: t) : second.factor(at: t - milestone)
        case .product(let a, let b):
            return a.factor(at: t) * b.factor(at: t)
        }
    }

    /// Linear warm-up from `startFactor` to 1 over `steps`, then `schedule` (restarted at 0).
    public static func warmup(steps: Int, startFactor: Double, then schedule: LRSchedule) -> LRSchedule {
        .sequential(.linear(startFactor: startFactor, endFactor: 1, steps: steps), schedule, milestone: steps)
    }
}

/// A run bounded by wall-clock seconds instead of epochs (budgeted training): the first
/// `warmupSteps` steps count as steps, after which the main schedule advances with the elapsed
/// fraction of the remaining time, so that it ends — cosine at 0 — when the budget is spent.
/// Positions index an `LRSchedule` whose main part spans `TimeBudget.ticks` steps, e.g.
/// `.warmup(steps: warmupSteps, startFactor: 0.01, then: .cosine(steps: TimeBudget.ticks, minFactor: 0))`.
public struct TimeBudget: Sendable, Equatable {
    /// Resolution of the time axis: the main schedule's length in steps.
    public static let ticks = 1_000_000
    public var seconds: Double
    public var warmupSteps: Int

    public init(seconds: Double, warmupSteps: Int) {
        precondition(seconds > 0 && warmupSteps >= 0)
        (self.seconds, self.warmupSteps) = (seconds, warmupSteps)
    }

    /// The schedule position of `step` taken `elapsed` seconds into the run; `warmupEnd` is the
    /// elapsed time when the warm-up ended (nil while it runs) and `reserve` the seconds kept
    /// back at the end (the final evaluation). Clamped to the schedule's last tick.
    public func position(step: Int, elapsed: Double, warmupEnd: Double?, reserve: Double = 0) -> Int {
        guard step >= warmupSteps, let start = warmupEnd else { return Swift.min(step, warmupSteps) }
        let q = (elapsed - start) / Swift.max(seconds - reserve - start, 1e-9)
        return warmupSteps + Int((Swift.min(Swift.max(q, 0), 1) * Double(TimeBudget.ticks)).rounded(.down))
    }

    /// Whether the run must stop before a step starting at `elapsed` seconds.
    public func isSpent(elapsed: Double, reserve: Double = 0) -> Bool { elapsed + reserve >= seconds }
}
