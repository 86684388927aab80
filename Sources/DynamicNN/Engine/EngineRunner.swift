import DynamicCore
import Foundation

/// Runs a model's engine forward from plain tensors, the way `Layer`/`Differentiable` models
/// are called (`model(x)`, `model.backward(g)`): eval mode in micro-batches on the engine's
/// workers, training mode as one recording forward whose backward `backward` runs.
/// One call at a time (a lock guards it).
public final class EngineRunner: @unchecked Sendable {
    public let engine = Engine()
    private let lock = NSLock()
    /// The output and input of the last recording forward, awaiting `backward`.
    private var pending: (output: Variable, input: FeatureMap)?

    public init() {}

    /// Output [N, …] of `forward` for x [N, …]. `training`: record for `backward` (batch
    /// statistics over the whole batch); else run micro-batches of `microBatch` images.
    public func run(_ x: Tensor, training: Bool, threads: Int?, microBatch: Int,
                    _ forward: (FeatureMap) -> Variable) -> Tensor {
        lock.lock()
        defer { lock.unlock() }
        engine.threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        pending = nil
        if !training { return engine.runMicroBatches(x, microBatch: microBatch, forward) }
        engine.begin(batch: x.shape[0], recording: true)
        let input = engine.input(x)
        let output = forward(input)
        pending = (output, input)
        return output.value
    }

    /// True after a training-mode `run`, until `backward`.
    public var hasPendingBackward: Bool { pending != nil }

    /// Backward of the last training-mode `run` from dL/d(output): accumulates every parameter
    /// gradient; returns dL/dx [N, …] when `inputGradient` (the first op's input gradient is
    /// skipped otherwise).
    public func backward(_ gradOutput: Tensor, inputGradient: Bool) -> Tensor? {
        lock.lock()
        defer { lock.unlock() }
        guard let (output, input) = pending else { preconditionFailure("backward without a training-mode forward") }
        pending = nil
        input.requiresGradient = inputGradient
        engine.backward(output, gradient: gradOutput)
        return inputGradient ? input.gradient : nil
    }
}
