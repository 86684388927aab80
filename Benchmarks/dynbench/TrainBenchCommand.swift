import DynamicInference
import Foundation

// `dynbench train-bench`: full training steps on random data.

func runTrainBench(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--models", "--threads", "--batch", "--repeats", "--warmup", "--json"])
    let models = a.values["--models"] ?? ["resnet20_cifar", "resnet56_cifar"]
    let threadList = try a.ints("--threads", [1, Parallel.coreCount])
    let batchList = try a.ints("--batch", [128])
    let repeats = try a.int("--repeats", 12, min: 1)
    let warmup = try a.int("--warmup", 3)
    warnAboutBuild()
    print("dynbench train-bench — \(TargetFeatures.summary) \(kernels), \(Parallel.coreCount) cores; full SGD steps (Nesterov, wd 5e-4), "
          + "\(warmup) warm-up + \(repeats) timed")
    print("case".padding(toLength: 20, withPad: " ", startingAt: 0), "thr", "batch", " median ms", "   min–max ms       ",
          " img/s", "  GFLOP/s")
    var rows: [ResultRow] = []
    for name in models {
        for t in threadList {
            Parallel.defaultThreads = t
            for b in batchList {
                var rng = SeededRNG(seed: 0)
                let model = try ModelRegistry.build(name, for: ImageShape(channels: 3, height: 32, width: 32, classes: 10))
                model.setThreads(t)
                let opt = SGD(model.network.trainableParameters, learningRate: 0.05, momentum: 0.9, weightDecay: 5e-4, nesterov: true)
                var options = TrainingOptions()
                options.threads = t
                options.kernels = kernels
                let trainer = Trainer(network: model.network, optimizer: opt, options: options)
                let batch = Batch(images: Tensor.normal([b, 3, 32, 32], rng: &rng), labels: (0..<b).map { _ in Int(rng.next() % 10) })
                let timing = Timing.measure(warmup: warmup, repeats: repeats) { trainer.step(batch) }
                let flops = 3 * 2 * Double(model.macsPerImage)
                let ips = Double(b) / (timing.median / 1e3)
                let row = ResultRow(framework: "dynbench-train", model: name, threads: t, batch: b, flops_per_image: flops,
                                    median_ms: timing.median, min_ms: timing.min, max_ms: timing.max, img_per_s: ips,
                                    gflops: flops * ips / 1e9)
                rows.append(row)
                print(name.padding(toLength: 20, withPad: " ", startingAt: 0),
                      String(format: "%3d %5d %10.1f  %8.1f–%-9.1f %8.1f %8.1f", t, b, timing.median, timing.min, timing.max,
                             ips, row.gflops))
                fflush(nil)
            }
        }
    }
    Parallel.defaultThreads = Parallel.coreCount
    if let path = a.string("--json") {
        var info = machineInfo(kernels: kernels)
        info["flops_per_image"] = "3 × forward FLOPs (forward FLOPs = 2 × conv and linear MACs)"
        info["argv"] = CommandLine.arguments.joined(separator: " ")
        try writeJSON(ResultFile(info: info, results: rows), to: path)
    }
}
