import DynamicInference
import Foundation

// `dynbench train`: a front end to the library's `Trainer` for the registry's networks and datasets.

let trainUsage = """
usage: dynbench train --model resnet20|resnet56|resnetN|cnn-small|ranet|msdnet [--preset NAME] --dataset cifar10|fashion-mnist --data DIR
                      --out DIR [--epochs N] [--batch B] [--lr LR] [--momentum M] [--weight-decay WD]
                      [--nesterov] [--schedule cosine|multistep|constant] [--warmup-epochs K]
                      [--label-smoothing S] [--no-bias-decay] [--zero-init-residual]
                      [--crop-pad P] [--flip|--no-flip] [--alternating-flip] [--cutout SIZE] [--val N] [--seed S]
                      [--threads T] [--eval-batch B] [--test-every K] [--time-budget SECONDS] [--tta]
                      [--small-crop SIZE:FRACTION[,SIZE:FRACTION…]]
                      [--cnn-stages 32:64:] [--cnn-head gap|flatten|flatten:H] [--resume]
       dynbench eval --checkpoint FILE --dataset cifar10|fashion-mnist --data DIR [--model NAME]
                      [--batch B] [--threads T] [--tta]
       dynbench train-bench [--models resnet20_cifar resnet56_cifar] [--threads 1 2] [--batch 64 128]
                      [--repeats R] [--warmup W] [--json FILE]
  train        SGD training with a per-epoch validation (held out of the training set) and test
               evaluation in eval mode; writes OUT/log.csv, OUT/log.json and OUT/checkpoint.safetensors
               every epoch; --resume continues from that checkpoint (same arguments).
               Defaults: epochs 10, batch 128, lr 0.1, momentum 0.9, weight decay 5e-4, cosine, val 5000,
               seed 0; augmentation crop-pad 4 + flip for cifar10, none for fashion-mnist.
               --val 0 trains on the whole training set (no val_acc); --test-every K scores the test
               set every K epochs and after the last (the log leaves the other epochs empty).
               --time-budget S: a run of S seconds wall clock, final test scoring included: after the
               warm-up the schedule advances with elapsed time instead of steps (cosine reaches 0 when
               time is up) and the last epoch stops early (its log row says how many steps it ran);
               --epochs becomes a cap (default none). Not bit-reproducible: the rate at a step depends
               on the machine's speed. --tta: also score the test set with horizontal-flip test-time
               augmentation (logits of image + mirror image; column test_acc_flip).
               --small-crop SIZE:FRACTION: progressive resizing — random SIZE×SIZE crops (same padding
               and flip) for the first FRACTION of the epochs (of the time budget with --time-budget),
               cheaper steps; full-size crops after, and always full images for evaluation. Several
               stages ramp up: 20:0.3,24:0.6 is 20 px until 30 %, 24 px until 60 %, then full size.
               --alternating-flip: each image's flip is random in the first epoch and inverted every
               other epoch after (derandomized flipping: both views in every pair of epochs).
               --cutout SIZE: after crop and flip, zero a SIZE×SIZE square at a random centre
               (DeVries & Taylor 2017; 0 = off).
               --no-bias-decay: no weight decay on biases and batch-norm γ/β; --zero-init-residual:
               every residual block's last batch-norm γ starts at 0 (resnet models).
               --cnn-stages: cnn-small's conv widths, stages separated by ':' (max pool between stages),
               convs within a stage by ','; default 32:64: (an empty last stage: pool, then the head).
               --cnn-head: global average pool (gap) or flatten, optionally with a hidden ReLU layer
               of H units (default flatten:128).
               --preset: the configuration of ranet (cifar-readme, cifar-script, imagenet-readme) or
               msdnet (cifar-budgeted, cifar-anytime, imagenet); the reference recipe for both is
               --lr 0.1 --momentum 0.9 --weight-decay 1e-4 --schedule multistep (×0.1 at 50 %, 75 %),
               batch 64; the loss is the sum of every exit's cross-entropy, and the log has each
               exit's accuracy.
  eval         test accuracy and images/s of a checkpoint (model name from the checkpoint if omitted);
               --tta adds the accuracy with horizontal-flip test-time augmentation.
  train-bench  full training steps on random data (training-mode forward, cross-entropy, backward,
               Nesterov SGD momentum 0.9, weight decay 5e-4); flops_per_image = 3 × forward FLOPs
               (forward + input gradient + weight gradient; forward FLOPs = 2 × MACs).
"""

func runTrain(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: ["--nesterov", "--resume", "--flip", "--no-flip", "--alternating-flip", "--no-bias-decay", "--zero-init-residual", "--tta"],
                         known: ["--model", "--dataset", "--data", "--epochs", "--batch", "--lr", "--momentum",
                                 "--weight-decay", "--schedule", "--warmup-epochs", "--label-smoothing", "--threads",
                                 "--val", "--seed", "--out", "--crop-pad", "--eval-batch", "--test-every", "--cnn-stages", "--cnn-head", "--preset",
                                 "--time-budget", "--small-crop", "--cutout"])
    let dataset = try DatasetChoice.named(a.required("--dataset"))
    let dataDir = URL(fileURLWithPath: try a.required("--data"))
    let outDir = URL(fileURLWithPath: try a.required("--out"))
    let budgetSeconds: Double? = a.has("--time-budget") ? try a.double("--time-budget", 0) : nil
    guard (budgetSeconds ?? 1) > 0 else { throw CLIError(description: "--time-budget needs seconds > 0") }
    let epochs = try a.int("--epochs", budgetSeconds == nil ? 10 : 1_000_000, min: 1)
    let tta = a.has("--tta")
    let batch = try a.int("--batch", 128, min: 1)
    let lr = try a.double("--lr", 0.1)
    let momentum = try a.double("--momentum", 0.9)
    let wd = try a.double("--weight-decay", 5e-4)
    let nesterov = a.has("--nesterov")
    let scheduleName = a.string("--schedule", "cosine")
    let warmupEpochs = try a.double("--warmup-epochs", 0)
    let smoothing = try a.double("--label-smoothing", 0)
    let threads = try a.int("--threads", Parallel.coreCount, min: 1)
    let valCount = try a.int("--val", 5000, min: 0)
    let seed = UInt64(try a.int("--seed", 0))
    let evalBatch = try a.int("--eval-batch", 500, min: 1)
    // The test set is for reporting only; scoring it every epoch costs ~5 % of a CIFAR epoch.
    let testEvery = try a.int("--test-every", 1, min: 1)
    let cnn = try CNNShape(stages: a.string("--cnn-stages", CNNShape.defaultStages), head: a.string("--cnn-head", CNNShape.defaultHead))
    guard ["cosine", "multistep", "constant"].contains(scheduleName) else {
        throw CLIError(description: "--schedule must be cosine, multistep or constant")
    }
    guard smoothing <= 1 else { throw CLIError(description: "--label-smoothing must be in [0, 1]") }
    guard !nesterov || momentum > 0 else { throw CLIError(description: "--nesterov needs --momentum > 0") }
    var augmentation = dataset.defaultAugmentation
    augmentation.cropPadding = try a.int("--crop-pad", augmentation.cropPadding)
    if a.has("--flip") { augmentation.horizontalFlip = true }
    if a.has("--no-flip") { augmentation.horizontalFlip = false }
    if a.has("--alternating-flip") {
        guard augmentation.horizontalFlip else { throw CLIError(description: "--alternating-flip needs flips (--flip)") }
        augmentation.alternatingFlip = true
    }
    augmentation.cutout = try a.int("--cutout", 0)

    warnAboutBuild()
    Parallel.defaultThreads = threads
    let t0 = DispatchTime.now().uptimeNanoseconds
    let full = try dataset.load(dataDir, train: true)
    let test = try dataset.load(dataDir, train: false)
    guard valCount < full.count else { throw CLIError(description: "--val \(valCount) leaves no training images") }
    let (trainSet, valSet) = full.split(validationCount: valCount, seed: seed)
    let loadSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
    let model = try ModelRegistry.build(a.required("--model"), for: ImageShape(channels: full.channels, height: full.height,
                                                                             width: full.width, classes: full.classCount),
                                        options: ModelOptions(cnn: cnn, preset: a.string("--preset")), seed: seed)
    model.setThreads(threads)
    let net = model.network
    let zeroInitResidual = a.has("--zero-init-residual")
    if zeroInitResidual {
        guard let resnet = net as? CIFARResNet else { throw CLIError(description: "--zero-init-residual needs a resnet model") }
        resnet.zeroInitResiduals()
    }
    // --no-bias-decay: biases and batch-norm γ/β (the 1-D parameters) get no weight decay.
    let noBiasDecay = a.has("--no-bias-decay")
    let params = net.trainableParameters
    let groups = noBiasDecay
        ? [ParameterGroup(params.filter { $0.value.rank > 1 }, learningRate: Float(lr), weightDecay: Float(wd)),
           ParameterGroup(params.filter { $0.value.rank <= 1 }, learningRate: Float(lr), weightDecay: 0)]
        : [ParameterGroup(params, learningRate: Float(lr), weightDecay: Float(wd))]
    let opt = SGD(groups: groups, momentum: Float(momentum), nesterov: nesterov)
    let batches = MiniBatches(trainSet, batchSize: batch, normalization: dataset.normalization,
                              augmentation: augmentation, shuffle: true, dropLast: true, seed: seed)
    // --small-crop: the same batches (order, offsets' seeds) with smaller crops, for the early epochs;
    // stages in the order given, each until its fraction of the run.
    let smallCropText = a.string("--small-crop")
    let smallCrops: [(batches: MiniBatches, until: Double)] = try smallCropText.map { text in
        let usage = "--small-crop wants SIZE:FRACTION[,SIZE:FRACTION…] with 8 ≤ SIZE ≤ image size + 2 × crop padding "
            + "and increasing FRACTIONs in [0, 1], e.g. 24:0.5 or 20:0.3,24:0.6; got \(text)"
        guard model.name != "cnn-small" || cnn.headText == "gap" else {
            throw CLIError(description: "--small-crop needs a model that takes any image size: a resnet or cnn-small with --cnn-head gap")
        }
        var stages: [(batches: MiniBatches, until: Double)] = []
        for stage in text.split(separator: ",") {
            let parts = stage.split(separator: ":")
            guard parts.count == 2, let size = Int(parts[0]), let f = Double(parts[1]), f >= (stages.last?.until ?? 0), f <= 1,
                  size >= 8, size <= min(full.height, full.width) + 2 * augmentation.cropPadding else {
                throw CLIError(description: usage)
            }
            var small = augmentation
            small.cropSize = size
            stages.append((MiniBatches(trainSet, batchSize: batch, normalization: dataset.normalization, augmentation: small,
                                       shuffle: true, dropLast: true, seed: seed), f))
        }
        guard !stages.isEmpty else { throw CLIError(description: usage) }
        return stages
    } ?? []
    guard batches.batchCount > 0 else { throw CLIError(description: "--batch \(batch) is larger than the training set") }

    // The arguments that decide the run; a resume must repeat them.
    var config: [String: String] = [
        "model": model.name, "dataset": dataset.name, "epochs": String(epochs), "batch": String(batch),
        "lr": String(lr), "momentum": String(momentum), "weight_decay": String(wd), "nesterov": String(nesterov),
        "schedule": scheduleName, "warmup_epochs": String(warmupEpochs), "label_smoothing": String(smoothing),
        "val": String(valCount), "seed": String(seed), "crop_pad": String(augmentation.cropPadding),
        "flip": String(augmentation.horizontalFlip),
    ].merging(model.name == "cnn-small" ? ["cnn_stages": cnn.stagesText, "cnn_head": cnn.headText] : [:]) { a, _ in a }
    if noBiasDecay { config["no_bias_decay"] = "true" }
    if augmentation.alternatingFlip { config["alternating_flip"] = "true" }
    if augmentation.cutout > 0 { config["cutout"] = String(augmentation.cutout) }
    if zeroInitResidual { config["zero_init_residual"] = "true" }
    if let budgetSeconds { config["time_budget_s"] = String(budgetSeconds) }
    if let smallCropText { config["small_crop"] = smallCropText }
    var options = TrainingOptions()
    options.epochs = epochs
    options.timeBudget = budgetSeconds
    options.warmupEpochs = warmupEpochs
    options.schedule = TrainingOptions.Schedule(rawValue: scheduleName)!
    options.labelSmoothing = Float(smoothing)
    options.testEvery = testEvery
    options.flipTTA = tta
    options.threads = threads
    options.kernels = kernels
    let trainer = Trainer(network: net, optimizer: opt, options: options)
    trainer.config = config

    print("dynbench train — \(TargetFeatures.summary) \(kernels), \(threads) thread(s)")
    print("\(model.name) (\(net.parameterCount) parameters, \(String(format: "%.1f", Double(model.macsPerImage) / 1e6)) MMACs/image) "
          + "on \(dataset.name): \(trainSet.count) train / \(valSet.count) val / \(test.count) test images "
          + "(loaded in \(String(format: "%.1f", loadSeconds)) s)")
    print("SGD lr \(lr) momentum \(momentum)\(nesterov ? " nesterov" : "") wd \(wd)\(noBiasDecay ? " (not on biases, BN)" : ""), \(scheduleName) schedule"
          + (warmupEpochs > 0 ? " after \(warmupEpochs) warm-up epoch(s)" : "") + ", batch \(batch), "
          + (budgetSeconds.map { "\(Trainer.duration($0)) time budget" } ?? "\(epochs) epochs") + " × \(batches.batchCount) steps"
          + (smoothing > 0 ? ", label smoothing \(smoothing)" : "")
          + ", augmentation crop-pad \(augmentation.cropPadding) flip \(augmentation.horizontalFlip)"
          + (augmentation.alternatingFlip ? " (alternating)" : "")
          + (augmentation.cutout > 0 ? " cutout \(augmentation.cutout)" : "")
          + (zeroInitResidual ? ", residual branches start at γ = 0" : "")
          + (smallCropText.map { ", small crops \($0) (size:fraction)" } ?? ""))
    let records: [EpochRecord]
    do {
        records = try trainer.fit(train: batches, cropStages: smallCrops.map { ($0.batches, $0.until) },
                                  validation: MiniBatches(valSet, batchSize: evalBatch, normalization: dataset.normalization),
                                  test: MiniBatches(test, batchSize: evalBatch, normalization: dataset.normalization),
                                  outputDirectory: outDir, resume: a.has("--resume"))
    } catch { throw CLIError(description: "\(error)") }
    let csvURL = outDir.appendingPathComponent("log.csv"), jsonURL = outDir.appendingPathComponent("log.json")
    if let last = records.last, let testAcc = last.test_acc {
        print(String(format: "done: test accuracy %.4f%@ after %d epochs, %.1f s; wrote %@, %@, %@", testAcc,
                     last.test_acc_flip.map { String(format: " (%.4f with flip TTA)", $0) } ?? "", last.epoch,
                     last.elapsed_s, csvURL.path, jsonURL.path, outDir.appendingPathComponent("checkpoint.safetensors").path))
    }
}

