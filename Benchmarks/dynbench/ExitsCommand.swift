import DynamicInference
import Foundation

// `dynbench exits`: an early-exit network's cost and speed at every exit, and with a trained
// checkpoint its anytime and budgeted accuracy (thresholds from the validation split only).

let exitsUsage = """
usage: dynbench exits --model ranet|msdnet --preset NAME [--classes N] [--threads T] [--rounds R]
                      [--checkpoint FILE --dataset cifar10 --data DIR [--val 5000] [--seed S]] [--json FILE]
  Per exit k: cumulative reference MFLOPs F_k and t_k, the measured milliseconds per image when
  every sample leaves at k (deployment forward, batch 1 and 64, R alternating rounds, medians),
  and t_k / t_K against F_k / F_K. Untrained weights unless --checkpoint.
  With a checkpoint: the validation split of `dynbench train` (the same --val and --seed) and the
  test set are scored at every exit (anytime accuracy, and the ensemble: argmax of the summed
  softmax of exits ≤ k); the 39 operating points of adaptive_inference.py take their thresholds
  from the validation split and are scored on the test set, with the expected MFLOPs and the
  expected ms per image (Σ share_k · t_k); at p = 0.1, 0.3, 0.5, 1.0, 1.5 the deployment forward
  over the test set is timed too (ms per image at batch 64, and at batch 1 on its first 256 images).
"""

struct ExitsReport: Codable {
    struct Exit: Codable {
        var exit: Int, mflops: Double, params: Int
        var ms_b1: Double, ms_b64: Double
        var val_acc: Double?, test_acc: Double?, test_acc_ensemble: Double?
    }
    struct Point: Codable {
        var p: Double, thresholds: [Float], exit_shares: [Double]
        var expected_mflops: Double, val_acc: Double, test_acc: Double
        var expected_ms_b1: Double, expected_ms_b64: Double
        var ms_per_image_b1: Double?, ms_per_image_b64: Double?
    }
    var name: String
    var machine: String
    var threads: Int
    var checkpoint: String?
    var exits: [Exit]
    var full_ms_per_image_b1: Double
    var full_ms_per_image_b64: Double
    var budgeted: [Point]?
}

func runExits(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--model", "--preset", "--classes", "--threads", "--rounds", "--checkpoint",
                                                     "--dataset", "--data", "--val", "--seed", "--json"], usage: exitsUsage)
    let (net, name, size) = try earlyExitNetwork(a)
    let threads = try a.int("--threads", Parallel.coreCount, min: 1)
    let rounds = try a.int("--rounds", 5, min: 1)
    warnAboutBuild()
    if let path = a.string("--checkpoint") {
        let info = try Checkpoint.load(from: URL(fileURLWithPath: path), model: net, optimizer: nil)
        print("\(name): checkpoint \(path), epoch \(info.epoch)")
    }
    net.eval()
    let engine = Engine(threads: threads, kernels: kernels)
    let figures = try exitFigures(net, name: name, size: size)
    let exits = net.exitCount
    // t_k at batch 1 and 64: every sample leaves at k; exits alternate within each round.
    var rng = SeededRNG(seed: 1)
    let x64 = Tensor.normal([64, 3, size, size], rng: &rng), x1 = x64.batch(0..<1)
    func perImage(_ x: Tensor, _ policy: ExitPolicy) -> () -> Void { { _ = try! net.infer(x, policy: policy, engine: engine) } }
    var samples = [[Double]](repeating: [], count: 2 * exits)
    for _ in 0..<rounds {
        for (i, x) in [x1, x64].enumerated() {
            for k in 0..<exits {
                let (ms, _) = alternating(rounds: 1, perImage(x, .exit(k)), {})
                samples[i * exits + k].append(ms / Double(x.shape[0]))
            }
        }
    }
    let t1 = (0..<exits).map { Timing(samples: samples[$0]).median }
    let t64 = (0..<exits).map { Timing(samples: samples[exits + $0]).median }
    print("dynbench exits — \(TargetFeatures.summary) \(kernels), \(threads) thread(s), \(rounds) rounds")
    print("exit  ref MFLOPs  F_k/F_K   ms/img b1  t_k/t_K b1   ms/img b64  t_k/t_K b64   bound b1  bound b64")
    let fK = figures.exits.last!.mflops
    for k in 0..<exits {
        let f = figures.exits[k].mflops / fK
        print(String(format: "%4d  %10.2f  %7.3f   %9.3f  %10.3f   %10.3f  %11.3f   %8.3f  %9.3f", k, figures.exits[k].mflops, f,
                     t1[k], t1[k] / t1[exits - 1], t64[k], t64[k] / t64[exits - 1], f / 0.85 + 0.05, f / 0.85 + 0.02))
    }
    var report = ExitsReport(name: name, machine: machineInfo(kernels: kernels)["cpu"] ?? "", threads: threads,
                             checkpoint: a.string("--checkpoint"),
                             exits: figures.exits.map { ExitsReport.Exit(exit: $0.exit, mflops: $0.mflops, params: $0.params,
                                                                          ms_b1: t1[$0.exit], ms_b64: t64[$0.exit]) },
                             full_ms_per_image_b1: t1[exits - 1], full_ms_per_image_b64: t64[exits - 1])

    if a.has("--checkpoint") {
        let dataset = try DatasetChoice.named(a.required("--dataset"))
        let dir = URL(fileURLWithPath: try a.required("--data"))
        let full = try dataset.load(dir, train: true), test = try dataset.load(dir, train: false)
        let valCount = try a.int("--val", 5000, min: 1)
        let (_, valSet) = full.split(validationCount: valCount, seed: UInt64(try a.int("--seed", 0)))
        func scores(_ set: LabeledImages) throws -> (ExitScores, Tensor) {
            let batches = MiniBatches(set, batchSize: 500, normalization: dataset.normalization)
            let at = batches.batches(ofEpoch: 0)
            var outputs: [[Tensor]] = [], images: [Tensor] = [], labels: [Int] = []
            for i in 0..<batches.batchCount {
                let b = at(i)
                outputs.append(try net.analyze(b.images, engine: engine).outputs)
                images.append(b.images)
                labels += b.labels
            }
            let perExit = (0..<exits).map { k in Tensor.concatBatch(outputs.map { $0[k] }) }
            return (ExitScores(outputs: perExit, labels: labels), Tensor.concatBatch(images))
        }
        let (val, _) = try scores(valSet)
        let (tst, testImages) = try scores(test)
        let ensemble = tst.ensembleAccuracy
        for k in 0..<exits {
            report.exits[k].val_acc = val.accuracy[k]
            report.exits[k].test_acc = tst.accuracy[k]
            report.exits[k].test_acc_ensemble = ensemble[k]
        }
        let mflops = figures.exits.map(\.mflops)
        var points: [ExitsReport.Point] = BudgetedEvaluation.points(validation: val, test: tst, cost: mflops).map { pt in
            ExitsReport.Point(p: pt.p, thresholds: pt.thresholds, exit_shares: pt.exitShares, expected_mflops: pt.expectedCost,
                              val_acc: pt.validationAccuracy, test_acc: pt.accuracy,
                              expected_ms_b1: zip(pt.exitShares, t1).reduce(0) { $0 + $1.0 * $1.1 },
                              expected_ms_b64: zip(pt.exitShares, t64).reduce(0) { $0 + $1.0 * $1.1 })
        }
        for i in points.indices where [0.1, 0.3, 0.5, 1.0, 1.5].contains(where: { abs($0 - points[i].p) < 1e-9 }) {
            let policy = ExitPolicy.thresholds(points[i].thresholds)
            var ms64: [Double] = [], ms1: [Double] = []
            for _ in 0..<Swift.max(1, rounds / 2) {
                let t0 = DispatchTime.now().uptimeNanoseconds
                for start in stride(from: 0, to: testImages.shape[0], by: 64) {
                    _ = try net.infer(testImages.batch(start..<min(start + 64, testImages.shape[0])), policy: policy, engine: engine)
                }
                ms64.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(testImages.shape[0]))
                let t1s = DispatchTime.now().uptimeNanoseconds
                for j in 0..<256 { _ = try net.infer(testImages.batch(j..<(j + 1)), policy: policy, engine: engine) }
                ms1.append(Double(DispatchTime.now().uptimeNanoseconds - t1s) / 1e6 / 256)
            }
            points[i].ms_per_image_b64 = Timing(samples: ms64).median
            points[i].ms_per_image_b1 = Timing(samples: ms1).median
        }
        report.budgeted = points
        print("exit  val acc  test acc  ensemble")
        for e in report.exits {
            print(String(format: "%4d  %7.4f  %8.4f  %8.4f", e.exit, e.val_acc ?? 0, e.test_acc ?? 0, e.test_acc_ensemble ?? 0))
        }
        print("   p  exp. MFLOPs  test acc  exp. ms b1  ms b1   exp. ms b64  ms b64")
        for pt in points {
            print(String(format: "%4.2f  %11.2f  %8.4f  %10.3f  %@  %11.3f  %@", pt.p, pt.expected_mflops, pt.test_acc, pt.expected_ms_b1,
                         (pt.ms_per_image_b1.map { String(format: "%6.3f", $0) } ?? "     –") as NSString, pt.expected_ms_b64,
                         (pt.ms_per_image_b64.map { String(format: "%6.3f", $0) } ?? "     –") as NSString))
        }
    }
    if let path = a.string("--json") {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(report).write(to: URL(fileURLWithPath: path))
        print("wrote \(path)")
    }
}
