import DynamicCore

/// What one optimizer step saw.
public struct StepResult: Sendable, Equatable {
    /// Mean cross-entropy of the batch plus the values of the model's per-tensor `LossHook`s.
    public var loss: Float
    /// Samples whose arg-max logit equals the label.
    public var correct: Int
    public var count: Int
}

extension Optimizer {
    /// One training step of a classifier on a batch: zero the gradients, training-mode forward,
    /// cross-entropy (optionally label-smoothed), backward, update.
    /// images: [N, C, H, W] → logits [N, classes]; labels: N class indices.
    @discardableResult
    public func trainStep(_ model: some Differentiable, images: Tensor, labels: [Int],
                          labelSmoothing: Float = 0) -> StepResult {
        model.train()
        model.zeroGrad()
        let logits = model(images)
        let ce = Loss.crossEntropy(logits: logits, labels: labels, labelSmoothing: labelSmoothing)
        model.backwardParameters(ce.gradient)
        step()
        let correct = zip(logits.argmax(), labels).filter { $0 == $1 }.count
        return StepResult(loss: ce.value + model.hookedLossValue, correct: correct, count: labels.count)
    }
}
