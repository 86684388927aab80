import DynamicCore
import Foundation

/// A network the `Trainer` drives: it runs on the engine and returns one output per exit.
public protocol TrainableNetwork: Module {
    /// Logits [N, classes] of every output (one for a plain classifier, one per exit of a
    /// multi-exit network) for x [N, C, H, W].
    func outputs(_ x: FeatureMap) -> [Variable]
    /// Loss terms on intermediate values of the forward that just ran (penalties on gates),
    /// added to the outputs' cross-entropy. Default: none.
    func addAuxiliaryLosses(to objective: inout Objective)
    /// Images per micro-batch of eval-mode inference on one worker (depth-first through the
    /// network). Default: 16.
    func inferenceMicroBatch(height: Int, width: Int) -> Int
}

extension TrainableNetwork {
    public func addAuxiliaryLosses(to objective: inout Objective) {}
    public func inferenceMicroBatch(height: Int, width: Int) -> Int { 16 }
}

/// A batch of labeled images: images [N, C, H, W] and N class indices.
public struct Batch: Sendable {
    public var images: Tensor
    public var labels: [Int]

    /// images: [N, C, H, W]; labels: N class indices.
    public init(images: Tensor, labels: [Int]) {
        precondition(images.rank >= 1 && images.shape[0] == labels.count, "\(labels.count) labels for images \(images.shape)")
        self.images = images
        self.labels = labels
    }
}

/// Batches the `Trainer` reads (`DynamicData`'s `MiniBatches` is one): `batchCount` batches per
/// epoch, each reproducible from (epoch, index) alone, so a resumed run replays the interrupted
/// one exactly. Sources for scoring are read in epoch 0 and should be neither shuffled nor augmented.
public protocol BatchSource {
    var batchCount: Int { get }
    /// The batches of epoch e (0-based), by index.
    func batches(ofEpoch e: Int) -> (Int) -> Batch
    /// Images in the batches of one epoch.
    var imageCount: Int { get }
    /// Height and width of the batches' images.
    var imageSize: (height: Int, width: Int) { get }
}

/// What a `Trainer` run does besides the optimizer's own settings.
public struct TrainingOptions: Sendable {
    public enum Schedule: String, Sendable { case cosine, multistep, constant }
    /// Epochs to train; with `timeBudget`, a cap.
    public var epochs = 10
    /// Seconds of wall clock for the whole run, final scoring included: after the warm-up the
    /// schedule advances with elapsed time (cosine reaches 0 when time is up) and the last epoch
    /// stops early. Not bit-reproducible (the rate at a step depends on the machine's speed).
    public var timeBudget: Double?
    /// Linear warm-up from 1 % of the rate over this many epochs, then `schedule`.
    public var warmupEpochs = 0.0
    /// After the warm-up: cosine to 0, ×0.1 at 50 % and 75 % (multistep), or constant.
    public var schedule = Schedule.cosine
    public var labelSmoothing: Float = 0
    /// Weight of each output's cross-entropy (nil: 1 each, the plain sum of multi-exit networks).
    public var outputWeights: [Float]?
    /// Score the test set every this many epochs and after the last.
    public var testEvery = 1
    /// Also score the test set with horizontal-flip test-time augmentation.
    public var flipTTA = false
    /// Threads of the engine (nil: `Parallel.defaultThreads`).
    public var threads: Int?
    /// The convolution kernels the engine runs on.
    public var kernels = KernelOptions.fastest
    /// A live progress line on standard error and a line per epoch on standard output.
    public var showsProgress = true

    public init() {}
}

/// One epoch of a run's log (the columns of log.csv; log.json has every field).
public struct EpochRecord: Codable, Sendable, Equatable {
    public var epoch: Int
    public var elapsed_s: Double
    public var train_loss: Double
    public var train_acc: Double
    /// The last output's accuracy; nil without a validation set, or on epochs that skip the test set.
    public var val_acc: Double?
    public var test_acc: Double?
    /// Test accuracy from the logits of each image plus its mirror image (`flipTTA`).
    public var test_acc_flip: Double?
    public var lr: Double
    public var train_img_per_s: Double
    /// Steps this epoch ran when a time budget cut it short (nil for a whole epoch).
    public var steps: Int?
    /// Every output's accuracy, for networks with several (nil with one).
    public var val_acc_exits: [Double]?
    public var test_acc_exits: [Double]?
}

/// Accuracy of every output of a network on a labeled set, in eval mode.
public struct Evaluation: Sendable {
    /// Top-1 accuracy per output.
    public var accuracy: [Double]
    /// The same from the summed logits of each image and its mirror image, when asked for.
    public var flipAccuracy: [Double]?
    public var imagesPerSecond: Double
}

/// Trains a `TrainableNetwork` with an optimizer: the epoch loop with a learning-rate schedule
/// and warm-up or a wall-clock budget, the outputs' cross-entropies plus the network's own loss
/// terms, eval-mode scoring of a validation and a test set (per output), a log (CSV and JSON)
/// and a checkpoint (model + optimizer + epoch) every epoch, and exact resume.
///
///     let trainer = Trainer(network: model, optimizer: SGD(model.trainableParameters, learningRate: 0.1,
///                                                          momentum: 0.9, weightDecay: 5e-4))
///     let log = try trainer.fit(train: MiniBatches(train, batchSize: 128, normalization: .cifar10,
///                                                  augmentation: .cifar, shuffle: true, dropLast: true),
///                               test: MiniBatches(test, batchSize: 500, normalization: .cifar10),
///                               outputDirectory: runDir)
public final class Trainer {
    public let network: any TrainableNetwork
    public let optimizer: any Optimizer
    public var options: TrainingOptions
    /// What decides the run: written to log.json and every checkpoint; a resume must match it.
    public var config: [String: String] = [:]
    public let engine: Engine
    public internal(set) var records: [EpochRecord] = []

    public init(network: any TrainableNetwork, optimizer: any Optimizer, options: TrainingOptions = TrainingOptions()) {
        self.network = network
        self.optimizer = optimizer
        self.options = options
        engine = Engine(threads: options.threads, kernels: options.kernels)
    }

    // MARK: - Steps and scoring

    /// One optimizer step on a batch: training-mode forward on the engine, the weighted
    /// cross-entropy of every output (+ the network's own terms), backward, update.
    /// `correct` counts the last output's hits; `loss` is the whole objective.
    @discardableResult
    public func step(_ batch: Batch) -> StepResult {
        network.train()
        optimizer.zeroGrad()
        engine.threads = options.threads ?? Parallel.defaultThreads
        engine.begin(batch: batch.labels.count, recording: true)
        let outputs = network.outputs(engine.input(batch.images))
        var objective = Objective()
        objective.addCrossEntropy(outputs, labels: batch.labels, weights: options.outputWeights,
                                  labelSmoothing: options.labelSmoothing)
        network.addAuxiliaryLosses(to: &objective)
        engine.backward(objective)
        optimizer.step()
        let correct = zip(outputs.last!.value.argmax(), batch.labels).filter { $0 == $1 }.count
        return StepResult(loss: objective.value, correct: correct, count: batch.labels.count)
    }

    /// Every output's accuracy on the batches of `data` (epoch 0) in eval mode.
    public func evaluate(_ data: any BatchSource, flip: Bool = false) -> Evaluation {
        Self.evaluate(network, data, flip: flip, engine: engine)
    }

    /// Every output's accuracy of `network` on the batches of `data` (epoch 0) in eval mode,
    /// micro-batched on `engine`'s workers.
    public static func evaluate(_ network: any TrainableNetwork, _ data: any BatchSource, flip: Bool = false,
                                engine: Engine = Engine()) -> Evaluation {
        guard data.imageCount > 0 else { return Evaluation(accuracy: [], flipAccuracy: flip ? [] : nil, imagesPerSecond: 0) }
        let wasTraining = network.isTraining
        network.eval()
        defer { network.train(wasTraining) }
        let micro = network.inferenceMicroBatch(height: data.imageSize.height, width: data.imageSize.width)
        var correct: [Int] = [], flipCorrect: [Int] = []
        func hits(_ logits: Tensor, _ labels: [Int]) -> Int { zip(logits.argmax(), labels).filter { $0 == $1 }.count }
        let t0 = DispatchTime.now().uptimeNanoseconds
        let batchAt = data.batches(ofEpoch: 0)
        for index in 0..<data.batchCount {
            let b = batchAt(index)
            let logits = engine.runMicroBatches(b.images, microBatch: micro, outputs: network.outputs)
            if correct.isEmpty { (correct, flipCorrect) = ([Int](repeating: 0, count: logits.count), [Int](repeating: 0, count: logits.count)) }
            for (k, l) in logits.enumerated() { correct[k] += hits(l, b.labels) }
            if flip {
                let mirrored = engine.runMicroBatches(b.images.flippedHorizontally(), microBatch: micro, outputs: network.outputs)
                for (k, (l, m)) in zip(logits, mirrored).enumerated() { flipCorrect[k] += hits(l + m, b.labels) }
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let n = Double(data.imageCount)
        return Evaluation(accuracy: correct.map { Double($0) / n }, flipAccuracy: flip ? flipCorrect.map { Double($0) / n } : nil,
                          imagesPerSecond: n / seconds)
    }
}
