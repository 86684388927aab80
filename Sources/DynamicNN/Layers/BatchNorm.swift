import DynamicCore
import Foundation

/// Batch normalization over channels (PyTorch `nn.BatchNorm2d`), x: [N, C, H, W] or [N, C].
/// Training mode normalizes with batch statistics and updates the running ones with
/// PyTorch's momentum rule (running = (1 − m)·running + m·batch, unbiased variance);
/// eval mode uses the running statistics.
public final class BatchNorm2d: Module, Layer {
    public let weight: Parameter, bias: Parameter
    public let runningMean: Parameter, runningVar: Parameter
    public let eps: Float, momentum: Float
    public var channels: Int { weight.value.count }
    /// Input and batch statistics of the last training-mode forward, kept for `backward`.
    var saved: BatchNormCache?

    public init(_ channels: Int, eps: Float = 1e-5, momentum: Float = 0.1) {
        weight = Parameter(Tensor(shape: [channels], repeating: 1))
        bias = Parameter(Tensor(zeros: [channels]))
        runningMean = Parameter(Tensor(zeros: [channels]), trainable: false)
        runningVar = Parameter(Tensor(shape: [channels], repeating: 1), trainable: false)
        self.eps = eps
        self.momentum = momentum
        super.init()
    }

    override public var ownParameters: [(String, Parameter)] {
        [("weight", weight), ("bias", bias), ("running_mean", runningMean), ("running_var", runningVar)]
    }

    public func callAsFunction(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 2 && x.shape[1] == channels, "BatchNorm2d(\(channels)) got \(x.shape)")
        if !isTraining {
            return Ops.batchNorm(x, gamma: weight.value, beta: bias.value, mean: runningMean.value,
                                 variance: runningVar.value, eps: eps)
        }
        let (mean, variance) = Self.batchStatistics(x)
        let cache = BatchNormCache(input: x, mean: mean,
                                   invStd: recordBatch(mean: mean, variance: variance, count: x.count / channels))
        saved = cache
        return cache.output(gamma: weight.value, beta: bias.value)
    }

    /// Records one training batch's statistics over `count` values per channel with PyTorch's
    /// momentum update (running = (1 − m)·running + m·batch, unbiased variance) and returns
    /// 1/√(σ²_biased + ε) per channel.
    func recordBatch(mean: [Float], variance: [Float], count n: Int) -> [Float] {
        let unbiased = n > 1 ? Float(n) / Float(n - 1) : 1
        runningMean.value = Tensor(shape: [channels], scalars: zip(runningMean.value.scalars, mean).map {
            (1 - momentum) * $0 + momentum * $1 })
        runningVar.value = Tensor(shape: [channels], scalars: zip(runningVar.value.scalars, variance).map {
            (1 - momentum) * $0 + momentum * $1 * unbiased })
        return variance.map { 1 / ($0 + eps).squareRoot() }
    }

    /// The training-mode normalisation γ·(x − μ)·invStd + β as a per-channel scale and shift.
    static func affine(gamma: [Float], beta: [Float], mean: [Float], invStd: [Float]) -> (scale: [Float], shift: [Float]) {
        let scale = (0..<gamma.count).map { gamma[$0] * invStd[$0] }
        return (scale, (0..<gamma.count).map { beta[$0] - mean[$0] * scale[$0] })
    }

    /// Per-channel mean and biased variance over N and the spatial axes (Double accumulation).
    public static func batchStatistics(_ x: Tensor) -> (mean: [Float], variance: [Float]) {
        let n = x.shape[0], c = x.shape[1], plane = x.count / (n * c)
        var sum = [Double](repeating: 0, count: c), sq = sum
        x.withUnsafeBufferPointer { p in
            for img in 0..<n {
                for ch in 0..<c {
                    let s = p.baseAddress! + (img * c + ch) * plane
                    var a = 0.0, b = 0.0
                    for i in 0..<plane { let v = Double(s[i]); a += v; b += v * v }
                    sum[ch] += a; sq[ch] += b
                }
            }
        }
        let count = Double(n * plane)
        let mean = sum.map { $0 / count }
        let variance = zip(sq, mean).map { Swift.max($0 / count - $1 * $1, 0) }
        return (mean.map(Float.init), variance.map(Float.init))
    }
}

/// What a training-mode batch norm forward leaves for its backward.
struct BatchNormCache {
    var input: Tensor
    var mean: [Float]
    /// 1/√(σ²_biased + ε) per channel.
    var invStd: [Float]

    /// γ·(x − μ)·invStd + β: the training-mode output, recomputable bit for bit.
    func output(gamma: Tensor, beta: Tensor) -> Tensor {
        let a = BatchNorm2d.affine(gamma: gamma.scalars, beta: beta.scalars, mean: mean, invStd: invStd)
        return Ops.channelAffine(input, scale: a.scale, shift: a.shift)
    }
}

extension BatchNorm2d: Differentiable {
    /// Backward through the batch statistics of the last training-mode forward.
    public func backward(_ gradOutput: Tensor) -> Tensor {
        guard let s = saved else { missingForward(self) }
        saved = nil
        let g = Ops.batchNormTrainingBackward(gradOutput, input: s.input, mean: s.mean, invStd: s.invStd,
                                              gamma: weight.value)
        weight.accumulateGrad(g.gamma)
        bias.accumulateGrad(g.beta)
        return g.input
    }

    /// The output of the last training-mode forward, rebuilt from the cache (for the
    /// activation masks of fused units, without keeping another activation-sized tensor).
    package func recomputedOutput() -> Tensor {
        guard let s = saved else { missingForward(self) }
        return s.output(gamma: weight.value, beta: bias.value)
    }
}
