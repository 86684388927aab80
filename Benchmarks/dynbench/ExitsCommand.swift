import DynamicInference
import Foundation

// `dynbench exits`: an early-exit network's cost and speed at every exit, and with a trained
// checkpoint its anytime and budgeted accuracy (thresholds from the validation split only).
// A dense network (`--model resnet20`) is measured the same way, as one exit.

let exitsUsage = """
usage: dynbench exits --model ranet|msdnet|resnetN [--preset NAME] [--classes N] [--threads T] [--rounds R]
                      [--checkpoint FILE --dataset cifar10 --data DIR [--val 5000] [--seed S]
                       [--budget-ms MS,MS…]] [--json FILE]
  Per exit k: cumulative reference MFLOPs F_k and t_k, the measured milliseconds per image when
  every sample leaves at k (deployment forward, batch 1 and 64, R alternating rounds, medians),
  and t_k / t_K against F_k / F_K. Untrained weights unless --checkpoint.
  With a checkpoint: the validation split of `dynbench train` (the same --val and --seed) and the
  test set are scored at every exit (anytime accuracy, and the ensemble: argmax of the summed
  softmax of exits ≤ k); the 39 operating points of adaptive_inference.py take their thresholds
  from the validation split and are scored on the test set, with the expected MFLOPs and the
  expected ms per image (Σ share_k · t_k); at p = 0.1, 0.3, 0.5, 1.0, 1.5 the deployment forward
  is timed too (ms per image at batch 64 over the test set, and at batch 1 over its first 1,000
  images, each against Σ share_k · t_k of the images it ran).
  --budget-ms: budgets in milliseconds per image on this machine, at batch 1 and at batch 64: the
  thresholds of the most accurate operating point whose expected time on the validation split
  (from that batch's t_k) is within the budget, then the measured time per image at that setting.
  The run's epochs and training seconds come from log.json beside the checkpoint, when present.
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
        /// Σ share_k · t_k (batch 1) over the images the batch-1 timing ran (the test set's first 1,000).
        var expected_ms_b1_timed: Double?
    }
    struct MsBudget: Codable {
        var budget_ms: Double, batch: Int, thresholds: [Float]
        /// Σ share_k · t_k on the validation split (what the budget bounds) and over the images timed.
        var expected_ms_val: Double, expected_ms_timed: Double, expected_mflops: Double
        var test_acc: Double, ms_per_image: Double
    }
    var name: String
    var machine: String
    var threads: Int
    var checkpoint: String?
    var epochs: Int?
    var train_seconds: Double?
    var exits: [Exit]
    var full_ms_per_image_b1: Double
    var full_ms_per_image_b64: Double
    var budgeted: [Point]?
    var ms_budgets: [MsBudget]?
}

/// What `dynbench exits` measures: an early-exit network, or a dense network as its one exit.
struct ExitSubject {
    let name: String
    let size: Int
    let exits: Int
    let network: any TrainableNetwork
    let parameterCounts: [Int]
    /// Per-sample costs of the deployment forward of x [N, 3, H, W] under a policy (a dense
    /// network runs whole whatever the policy).
    let infer: (_ x: Tensor, _ policy: ExitPolicy, _ engine: Engine) throws -> [ComputeCost]
    /// Every exit's logits [N, classes].
    let analyze: (_ x: Tensor, _ engine: Engine) throws -> [Tensor]

    init(_ net: any EarlyExitNetwork, name: String, size: Int) {
        (self.name, self.size, exits, network, parameterCounts) = (name, size, net.exitCount, net, net.exitParameterCounts)
        infer = { x, policy, engine in try net.infer(x, policy: policy, engine: engine).costs }
        analyze = { x, engine in try net.analyze(x, engine: engine).outputs }
    }

    init<M: AdaptiveModel>(dense m: M, name: String, size: Int) throws {
        guard let policy = DensePolicy() as? M.Policy else { throw CLIError(description: "\(name) is not a dense network") }
        (self.name, self.size, exits, network, parameterCounts) = (name, size, 1, m, [m.parameterCount])
        infer = { x, _, engine in try m.infer(x, policy: policy, engine: engine).costs }
        analyze = { x, engine in try m.analyze(x, engine: engine).outputs }
    }

    /// The network `--model` (and `--preset`) names, for CIFAR-size images.
    static func named(_ a: FlagArgs) throws -> ExitSubject {
        let family = try a.required("--model")
        if family == "ranet" || family == "msdnet" {
            let (net, name, size) = try earlyExitNetwork(a)
            return ExitSubject(net, name: name, size: size)
        }
        let classes = try a.int("--classes", 10, min: 1)
        let built = try ModelRegistry.build(family, for: ImageShape(channels: 3, height: 32, width: 32, classes: classes))
        guard let m = built.network as? any AdaptiveModel else { throw CLIError(description: "\(family) is not an AdaptiveModel") }
        return try ExitSubject(dense: m, name: built.name, size: 32)
    }
}

/// Cumulative figures at every exit: the deployment forward with every sample leaving there.
func exitFigures(_ subject: ExitSubject) throws -> ExitFigures {
    let x = Tensor(zeros: [1, 3, subject.size, subject.size])
    let exits = try (0..<subject.exits).map { k -> ExitFigures.Exit in
        let cost = try subject.infer(x, .exit(k), Engine(threads: 1))[0]
        return ExitFigures.Exit(exit: k, mflops: Double(cost.referenceFLOPs) / 1e6, params: subject.parameterCounts[k], macs: cost.macs)
    }
    return ExitFigures(model: subject.name, resolution: subject.size, exits: exits)
}

func runExits(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--model", "--preset", "--classes", "--threads", "--rounds", "--checkpoint",
                                                     "--dataset", "--data", "--val", "--seed", "--budget-ms", "--json"], usage: exitsUsage)
    let subject = try ExitSubject.named(a)
    let threads = try a.int("--threads", Parallel.coreCount, min: 1)
    let rounds = try a.int("--rounds", 5, min: 1)
    let budgetsMs = try (a.string("--budget-ms")?.split(separator: ",") ?? []).map { s -> Double in
        guard let v = Double(s) else { throw CLIError(description: "--budget-ms takes numbers separated by commas, got \(s)") }
        return v
    }
    if !budgetsMs.isEmpty && !a.has("--checkpoint") { throw CLIError(description: "--budget-ms needs --checkpoint (thresholds come from its validation outputs)") }
    warnAboutBuild()
    var epochs: Int?, trainSeconds: Double?
    if let path = a.string("--checkpoint") {
        let url = URL(fileURLWithPath: path)
        let info = try Checkpoint.load(from: url, model: subject.network, optimizer: nil)
        print("\(subject.name): checkpoint \(path), epoch \(info.epoch)")
        let logURL = url.deletingLastPathComponent().appendingPathComponent("log.json")
        if let data = try? Data(contentsOf: logURL), let log = try? JSONDecoder().decode(TrainingLog.self, from: data),
           let last = log.epochs.last {
            (epochs, trainSeconds) = (last.epoch, last.elapsed_s)
        }
    }
    subject.network.eval()
    let engine = Engine(threads: threads, kernels: kernels)
    let figures = try exitFigures(subject)
    let exits = subject.exits
    // t_k at batch 1 and 64: every sample leaves at k; exits alternate within each round.
    var rng = SeededRNG(seed: 1)
    let x64 = Tensor.normal([64, 3, subject.size, subject.size], rng: &rng), x1 = x64.batch(0..<1)
    func perImage(_ x: Tensor, _ policy: ExitPolicy) -> () -> Void { { _ = try! subject.infer(x, policy, engine) } }
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
    print("dynbench exits — \(subject.name), \(TargetFeatures.summary) \(kernels), \(threads) thread(s), \(rounds) rounds")
    print("exit  ref MFLOPs  F_k/F_K   ms/img b1  t_k/t_K b1   ms/img b64  t_k/t_K b64   bound b1  bound b64")
    let fK = figures.exits.last!.mflops
    for k in 0..<exits {
        let f = figures.exits[k].mflops / fK
        print(String(format: "%4d  %10.2f  %7.3f   %9.3f  %10.3f   %10.3f  %11.3f   %8.3f  %9.3f", k, figures.exits[k].mflops, f,
                     t1[k], t1[k] / t1[exits - 1], t64[k], t64[k] / t64[exits - 1], f / 0.85 + 0.05, f / 0.85 + 0.02))
    }
    var report = ExitsReport(name: subject.name, machine: machineInfo(kernels: kernels)["cpu"] ?? "", threads: threads,
                             checkpoint: a.string("--checkpoint"), epochs: epochs, train_seconds: trainSeconds,
                             exits: figures.exits.map { ExitsReport.Exit(exit: $0.exit, mflops: $0.mflops, params: $0.params,
                                                                          ms_b1: t1[$0.exit], ms_b64: t64[$0.exit]) },
                             full_ms_per_image_b1: t1[exits - 1], full_ms_per_image_b64: t64[exits - 1])
    if a.has("--checkpoint") {
        try scoreCheckpoint(a, subject, engine: engine, rounds: rounds, t1: t1, t64: t64, budgetsMs: budgetsMs, into: &report)
    }
    if let path = a.string("--json") {
        try writeJSON(report, to: path)
    }
}

/// Accuracy at every exit on the validation split and the test set, the budgeted operating
/// points, their measured times, and the millisecond budgets.
private func scoreCheckpoint(_ a: FlagArgs, _ subject: ExitSubject, engine: Engine, rounds: Int, t1: [Double], t64: [Double],
                             budgetsMs: [Double], into report: inout ExitsReport) throws {
    let exits = subject.exits
    let dataset = try DatasetChoice.named(a.required("--dataset"))
    let dir = URL(fileURLWithPath: try a.required("--data"))
    let full = try dataset.load(dir, train: true), test = try dataset.load(dir, train: false)
    let valCount = try a.int("--val", 5000, min: 1)
    let (_, valSet) = full.split(validationCount: valCount, seed: UInt64(try a.int("--seed", 0)))
    print("thresholds from the validation split: \(valSet.count) of the \(full.count) training images (--val \(valCount)); scored on the \(test.count) test images")
    func scores(_ set: LabeledImages) throws -> (ExitScores, Tensor) {
        let batches = MiniBatches(set, batchSize: 500, normalization: dataset.normalization)
        let at = batches.batches(ofEpoch: 0)
        var outputs: [[Tensor]] = [], images: [Tensor] = [], labels: [Int] = []
        for i in 0..<batches.batchCount {
            let b = at(i)
            outputs.append(try subject.analyze(b.images, engine))
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
    print("exit  val acc  test acc  ensemble")
    for e in report.exits {
        print(String(format: "%4d  %7.4f  %8.4f  %8.4f", e.exit, e.val_acc ?? 0, e.test_acc ?? 0, e.test_acc_ensemble ?? 0))
    }
    guard exits > 1 else { return }

    // The deployment forward over the test set, ms per image: batch 64 over every image, batch 1
    // over the first `firstB1`; medians of max(1, rounds / 2) passes.
    let firstB1 = Swift.min(1000, testImages.shape[0])
    let b1Scores = tst.prefix(firstB1)
    func measured(_ policy: ExitPolicy, batch: Int) throws -> Double {
        let n = batch == 1 ? firstB1 : testImages.shape[0]
        var ms: [Double] = []
        for _ in 0..<Swift.max(1, rounds / 2) {
            let t0 = DispatchTime.now().uptimeNanoseconds
            for start in stride(from: 0, to: n, by: batch) {
                _ = try subject.infer(testImages.batch(start..<Swift.min(start + batch, n)), policy, engine)
            }
            ms.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(n))
        }
        return Timing(samples: ms).median
    }
    func expected(_ shares: [Double], _ t: [Double]) -> Double { zip(shares, t).reduce(0) { $0 + $1.0 * $1.1 } }

    let mflops = report.exits.map(\.mflops)
    var points: [ExitsReport.Point] = BudgetedEvaluation.points(validation: val, test: tst, cost: mflops).map { pt in
        ExitsReport.Point(p: pt.p, thresholds: pt.thresholds, exit_shares: pt.exitShares, expected_mflops: pt.expectedCost,
                          val_acc: pt.validationAccuracy, test_acc: pt.accuracy,
                          expected_ms_b1: expected(pt.exitShares, t1), expected_ms_b64: expected(pt.exitShares, t64))
    }
    for i in points.indices where [0.1, 0.3, 0.5, 1.0, 1.5].contains(where: { abs($0 - points[i].p) < 1e-9 }) {
        let policy = ExitPolicy.thresholds(points[i].thresholds)
        points[i].ms_per_image_b64 = try measured(policy, batch: 64)
        points[i].ms_per_image_b1 = try measured(policy, batch: 1)
        points[i].expected_ms_b1_timed = BudgetedEvaluation.evaluate(b1Scores, thresholds: points[i].thresholds, cost: t1).expectedCost
    }
    report.budgeted = points
    print("   p  exp. MFLOPs  test acc  exp. ms b64  ms b64  ratio   exp. ms b1*  ms b1*  ratio   (* first \(firstB1) test images)")
    for pt in points {
        var line = String(format: "%4.2f  %11.2f  %8.4f  %11.3f", pt.p, pt.expected_mflops, pt.test_acc, pt.expected_ms_b64)
        if let m64 = pt.ms_per_image_b64, let m1 = pt.ms_per_image_b1, let e1 = pt.expected_ms_b1_timed {
            let (r64, r1) = (m64 / pt.expected_ms_b64, m1 / e1)
            line += String(format: "  %6.3f  %5.3f%@  %11.3f  %6.3f  %5.3f%@", m64, r64, abs(r64 - 1) <= 0.1 ? " ✓" : " ✗",
                           e1, m1, r1, abs(r1 - 1) <= 0.1 ? " ✓" : " ✗")
        }
        print(line)
    }

    // Budgets in ms per image: thresholds from the validation split with that batch's t_k.
    var budgets: [ExitsReport.MsBudget] = []
    for budget in budgetsMs {
        for (batch, t) in [(1, t1), (64, t64)] {
            guard case .thresholds(let th) = try BudgetedEvaluation.thresholds(forBudget: budget, validation: val, cost: t,
                                                                              unit: "ms per image at batch \(batch)") else { continue }
            let v = BudgetedEvaluation.evaluate(val, thresholds: th, cost: t)
            let r = BudgetedEvaluation.evaluate(tst, thresholds: th, cost: t)
            let timed = BudgetedEvaluation.evaluate(batch == 1 ? b1Scores : tst, thresholds: th, cost: t).expectedCost
            let ms = try measured(.thresholds(th), batch: batch)
            budgets.append(ExitsReport.MsBudget(budget_ms: budget, batch: batch, thresholds: th, expected_ms_val: v.expectedCost,
                                                expected_ms_timed: timed, expected_mflops: expected(r.exitShares, mflops),
                                                test_acc: r.accuracy, ms_per_image: ms))
        }
    }
    if !budgets.isEmpty {
        report.ms_budgets = budgets
        print("budget ms  batch  exp. ms (val)  exp. ms (timed images)  measured ms  test acc  exp. MFLOPs")
        for b in budgets {
            print(String(format: "%9.3f  %5d  %13.3f  %22.3f  %11.3f  %8.4f  %11.2f", b.budget_ms, b.batch, b.expected_ms_val,
                         b.expected_ms_timed, b.ms_per_image, b.test_acc, b.expected_mflops))
        }
    }
}
