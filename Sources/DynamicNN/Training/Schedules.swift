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
