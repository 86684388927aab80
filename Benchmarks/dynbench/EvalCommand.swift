import DynamicInference
import Foundation

// `dynbench eval`: test accuracy and speed of a checkpoint.

func runEval(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: ["--tta"], known: ["--checkpoint", "--model", "--dataset", "--data", "--batch", "--threads",
                                                     "--cnn-stages", "--cnn-head", "--preset"])
    let ckpt = URL(fileURLWithPath: try a.required("--checkpoint"))
    let dataset = try DatasetChoice.named(a.required("--dataset"))
    let threads = try a.int("--threads", Parallel.coreCount, min: 1)
    let batch = try a.int("--batch", 500, min: 1)
    warnAboutBuild()
    Parallel.defaultThreads = threads
    let test = try dataset.load(URL(fileURLWithPath: try a.required("--data")), train: false)
    var name = a.string("--model")
    var stages = a.string("--cnn-stages"), head = a.string("--cnn-head")
    if name == nil || stages == nil || head == nil {
        let file: SafeTensorsFile
        do { file = try SafeTensors.read(contentsOf: ckpt) } catch { throw CheckpointError.file(error) }
        name = name ?? file.metadata["model"]
        guard name != nil else { throw CLIError(description: "\(ckpt.path) names no model; pass --model") }
        stages = stages ?? file.metadata["cnn_stages"]
        head = head ?? file.metadata["cnn_head"]
    }
    let model = try ModelRegistry.build(name!, for: ImageShape(channels: test.channels, height: test.height, width: test.width,
                                                               classes: test.classCount),
                                        options: ModelOptions(cnn: CNNShape(stages: stages ?? CNNShape.defaultStages,
                                                                            head: head ?? CNNShape.defaultHead), preset: a.string("--preset")))
    model.setThreads(threads)
    let info = try Checkpoint.load(from: ckpt, model: model.network, optimizer: nil)
    // One engine for the warm-up (packs weights, fills the buffer pools) and the timed pass.
    let engine = Engine(threads: threads, kernels: kernels)
    _ = Trainer.evaluate(model.network, MiniBatches(test.subset(Array(0..<min(batch, test.count))), batchSize: batch,
                                                    normalization: dataset.normalization), engine: engine)
    let r = Trainer.evaluate(model.network, MiniBatches(test, batchSize: batch, normalization: dataset.normalization),
                             flip: a.has("--tta"), engine: engine)
    print(String(format: "%@ on %@ test (%d images), checkpoint epoch %d: accuracy %.4f%@, %.0f img/s (%d thread(s), batch %d)",
                 model.name, dataset.name, test.count, info.epoch, r.accuracy.last ?? 0,
                 r.flipAccuracy.map { String(format: ", %.4f with flip TTA", $0.last ?? 0) } ?? "", r.imagesPerSecond,
                 threads, batch))
}

