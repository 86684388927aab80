import DynamicInference
import Foundation

// `dynbench skip`: m of N samples active through part of a network, against the dense
// computation of all N — the saving of batch partitioning in wall-clock time.

let skipUsage = """
usage: dynbench skip [--cases conv64 conv256 stage exit] [--threads T…] [--batch N]
                     [--fractions F…] [--rounds R] [--json FILE]
  m = round(F·N) samples active (a fixed random subset; defaults: N = 64, F = 1/8 1/4 1/2 3/4 1,
  threads 1 and 2, 15 rounds):
  conv64   one 3×3 convolution 64 → 64 channels on 32×32 (bias, ReLU)
  conv256  one 3×3 convolution 256 → 256 channels on 8×8 (bias, ReLU)
  stage    a ResNet-56 stage: 9 basic blocks of 32 channels on 16×16 (eval mode, batch norm folded)
  exit     ResNet-56 with a second classifier after stage 2 (ResNetWithExits): a threshold lets the
           N − m most confident samples stop there, the other m run stage 3
  Partitioned: the m active samples run as a compact batch (a convolution reads them where they
  are; other ops gather them) and are written back in place (conv, stage: the others pass
  through), or go on alone (exit). Dense (full_ms): the same
  computation on all N on its fastest route. Dense and partitioned alternate, R rounds; medians.
  active_fraction is m/N, and for exit the executed MACs over the dense network's.
  Bound: time_ratio ≤ active_fraction / 0.85 + max(0.02, 10 µs / full_ms).
"""

struct SkipRow: Codable {
    var `case`: String
    var kind = "samples"
    var threads: Int
    var batch: Int
    var active: Int
    /// m/N for the sample cases; executed MACs ÷ dense MACs for `exit`.
    var active_fraction: Double
    var samples_fraction: Double
    var full_ms: Double
    var ms: Double
    var time_ratio: Double
    var bound: Double
    var meets_bound: Bool
    /// Fixed costs, medians: gathering the active samples into a compact batch (convolutions
    /// read them in place instead; a residual block gathers them for its shortcut), putting
    /// them back (sample cases), deciding who leaves (exit: softmax confidence and split of one
    /// micro-batch's logits, and gathering its survivors).
    var gather_us: Double
    var scatter_us: Double?
    var decision_us: Double?
}

func runSkip(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--cases", "--threads", "--batch", "--fractions", "--rounds", "--json"],
                         usage: skipUsage)
    let cases = a.values["--cases"] ?? ["conv64", "conv256", "stage", "exit"]
    let threadList = try a.ints("--threads", [1, 2])
    let n = try a.int("--batch", 64, min: 1)
    let rounds = try a.int("--rounds", 15, min: 1)
    let fractions = try (a.values["--fractions"] ?? ["0.125", "0.25", "0.5", "0.75", "1"]).map { s -> Double in
        guard let f = Double(s), f > 0, f <= 1 else { throw CLIError(description: "--fractions takes numbers in (0, 1], got \(s)") }
        return f
    }
    for c in cases where !["conv64", "conv256", "stage", "exit"].contains(c) {
        throw CLIError(description: "unknown case \(c)\n\(skipUsage)")
    }
    warnAboutBuild()
    print("dynbench skip — \(TargetFeatures.summary) \(kernels), \(Parallel.coreCount) cores, "
          + "measured peak \(String(format: "%.1f", peakGFLOPsPerCore)) GFLOP/s per core; batch \(n), \(rounds) alternating rounds")
    print("case      thr    m  active  full ms       ms  ratio  bound  ok  gather µs  scatter µs  decide µs")
    var rows: [SkipRow] = []
    for name in cases {
        for t in threadList {
            let engine = Engine(threads: t, kernels: kernels)
            let bench: SkipBench = name == "exit" ? ExitSkip(batch: n, engine: engine) : SampleSkip(name, batch: n, engine: engine)
            var rng = SeededRNG(seed: 5)
            for f in fractions {
                let m = Swift.max(1, Int((f * Double(n)).rounded()))
                var order = Array(0..<n)
                order.shuffle(using: &rng)
                let active = Array(order.prefix(m)).sorted()
                var row = bench.measure(active: active, rounds: rounds)
                row.threads = t
                rows.append(row)
                print(String(format: "%-8@ %3d %4d  %6.3f %8.3f %8.3f  %5.3f  %5.3f  %@  %9.1f  %10@  %9@", name as NSString, t, m,
                             row.active_fraction, row.full_ms, row.ms, row.time_ratio, row.bound,
                             (row.meets_bound ? "yes" : " NO") as NSString, row.gather_us,
                             (row.scatter_us.map { String(format: "%.1f", $0) } ?? "–") as NSString,
                             (row.decision_us.map { String(format: "%.1f", $0) } ?? "–") as NSString))
            }
        }
    }
    if let path = a.string("--json") {
        struct SkipFile: Codable { var info: [String: String]; var rounds: Int; var results: [SkipRow] }
        try writeJSON(SkipFile(info: machineInfo(kernels: kernels), rounds: rounds, results: rows), to: path)
    }
}

protocol SkipBench {
    /// One row (threads filled in by the caller): dense and partitioned alternating.
    func measure(active: [Int], rounds: Int) -> SkipRow
}

/// Medians of `a` and `b` timed in alternation, each measurement long enough (≥ 3 ms of calls)
/// to rise above the timer, in ms per call.
func alternating(rounds: Int, _ a: () -> Void, _ b: () -> Void) -> (Double, Double) {
    func calls(_ body: () -> Void) -> Int {
        for _ in 0..<2 { body() }
        let t0 = DispatchTime.now().uptimeNanoseconds
        body()
        let ms = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6
        return Swift.max(1, Int((3 / Swift.max(ms, 1e-3)).rounded(.up)))
    }
    func time(_ k: Int, _ body: () -> Void) -> Double {
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<k { body() }
        return Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6 / Double(k)
    }
    let (ka, kb) = (calls(a), calls(b))
    var ta: [Double] = [], tb: [Double] = []
    for _ in 0..<rounds {
        ta.append(time(ka, a))
        tb.append(time(kb, b))
    }
    return (Timing(samples: ta).median, Timing(samples: tb).median)
}

func median(rounds: Int, _ body: () -> Void) -> Double { alternating(rounds: rounds, body, {}).0 }

func skipRow(_ name: String, batch: Int, active: Int, fraction: Double, full: Double, ms: Double, gather: Double,
             scatter: Double?, decision: Double?) -> SkipRow {
    let bound = fraction / 0.85 + Swift.max(0.02, 0.010 / full)
    return SkipRow(case: name, threads: 0, batch: batch, active: active, active_fraction: fraction,
                   samples_fraction: Double(active) / Double(batch), full_ms: full, ms: ms, time_ratio: ms / full, bound: bound,
                   meets_bound: ms / full <= bound, gather_us: gather * 1e3, scatter_us: scatter.map { $0 * 1e3 },
                   decision_us: decision.map { $0 * 1e3 })
}

/// A convolution or a ResNet stage that the inactive samples skip (they pass through).
final class SampleSkip: SkipBench {
    let name: String, n: Int, engine: Engine
    /// The input (never written, so every call sees the same data) and the map the active
    /// samples' results go back into (its other rows stand for the samples that skipped).
    let source: BlockedBuffer, destination: BlockedBuffer
    let op: (FeatureMap) -> FeatureMap

    init(_ name: String, batch n: Int, engine: Engine) {
        (self.name, self.n, self.engine) = (name, n, engine)
        var rng = SeededRNG(seed: 3)
        let (c, size): (Int, Int)
        switch name {
        case "conv64": (c, size) = (64, 32)
        case "conv256": (c, size) = (256, 8)
        default: (c, size) = (32, 16)
        }
        source = BlockedBuffer(Tensor.normal([n, c, size, size], rng: &rng), halo: 1)
        destination = BlockedBuffer(Tensor.normal([n, c, size, size], rng: &rng), halo: 1)
        if name == "stage" {
            let blocks = (0..<9).map { _ in BasicBlock(32, 32, stride: 1, rng: &rng).eval() }
            op = { x in blocks.reduce(x) { h, b in b(h) } }
        } else {
            let conv = Conv2d(c, c, kernelSize: 3, padding: 1, rng: &rng)
            op = { x in conv(x, activation: .relu) }
        }
    }

    func dense() {
        engine.begin(batch: n, recording: false)
        _ = op(engine.map(wrapping: source))
    }

    /// `updatingRows` with the result going to `destination` rather than back into `source`.
    func partitioned(_ rows: [Int]) {
        engine.begin(batch: n, recording: false)
        let x = engine.map(wrapping: source)
        if rows.count == n { _ = op(x); return }
        _ = engine.map(wrapping: destination).replacing(rows: rows, with: op(x.gathering(rows: rows)))
    }

    func measure(active rows: [Int], rounds: Int) -> SkipRow {
        let (full, ms) = alternating(rounds: rounds, dense, { self.partitioned(rows) })
        let gather = median(rounds: rounds) {
            self.engine.begin(batch: self.n, recording: false)
            _ = self.engine.map(wrapping: self.source).gathering(rows: rows).blocked()
        }
        engine.begin(batch: n, recording: false)
        let update = engine.map(wrapping: source).gathering(rows: rows)
        _ = update.blocked()
        let scatter = median(rounds: rounds) {
            _ = self.engine.map(wrapping: self.destination).replacing(rows: rows, with: update)
        }
        return skipRow(name, batch: n, active: rows.count, fraction: Double(rows.count) / Double(n), full: full, ms: ms,
                       gather: rows.count == n ? 0 : gather, scatter: rows.count == n ? 0 : scatter, decision: nil)
    }
}

/// ResNet-56 with an exit after stage 2: the samples whose confidence there passes the threshold
/// stop; the dense reference is the plain ResNet-56.
final class ExitSkip: SkipBench {
    let n: Int, engine: Engine
    let model: ResNetWithExits
    let x: Tensor
    /// Confidence of each sample at the early exit.
    let confidence: [Float]
    let micro: Int

    init(batch n: Int, engine: Engine) {
        (self.n, self.engine) = (n, engine)
        model = ResNetWithExits.depth(56, exitStages: [1], seed: 2).eval()
        var rng = SeededRNG(seed: 4)
        x = Tensor.normal([n, 3, 32, 32], rng: &rng)
        // Untrained, the exit's logits are large and every softmax saturates at 1: scale its
        // classifier so that the confidences spread and a threshold can pick exactly m samples.
        let logits = try! model.analyze(x).outputs[0]
        let scale = 3 / Swift.max(logits.scalars.map(abs).max()!, 1e-6)
        for p in [model.heads[0].weight, model.heads[0].bias!] { p.value = p.value * scale }
        confidence = ExitPolicy.confidence(try! model.analyze(x).outputs[0])
        micro = model.inferenceMicroBatch(height: 32, width: 32)
    }

    func measure(active: [Int], rounds: Int) -> SkipRow {
        let m = active.count
        // The N − m most confident samples leave: the threshold is the (N − m)-th largest confidence.
        let threshold = m == n ? Float.infinity : confidence.sorted(by: >)[n - m - 1]
        let policy = ExitPolicy.thresholds([threshold])
        let backbone = model.backbone
        let dense = { _ = self.engine.runMicroBatches(self.x, microBatch: self.micro, outputs: backbone.outputs) }
        dense()
        let denseMACs = engine.sampleCosts.reduce(0) { $0 + $1.macs }
        let out = try! model.infer(x, policy: policy, engine: engine)
        let goOn = out.decisions.filter { $0.exit == 1 }.count
        precondition(goOn == m, "the threshold let \(goOn) of \(m) samples go on")
        let fraction = Double(out.costs.reduce(0) { $0 + $1.macs }) / Double(denseMACs)
        let (full, ms) = alternating(rounds: rounds, dense, { _ = try! self.model.infer(self.x, policy: policy, engine: self.engine) })
        // Fixed costs of one micro-batch: the decision on its logits, and gathering its survivors
        // (the stage-2 output, 32 channels on 16×16).
        var rng = SeededRNG(seed: 6)
        let logits = Tensor.normal([micro, 10], rng: &rng)
        let decision = median(rounds: rounds) {
            var recorder = ExitRecorder(batch: self.micro)
            self.engine.begin(batch: self.micro, recording: false)
            let v = self.engine.variable(logits)
            let split = policy.split(logits, exit: 0, exits: 2)
            recorder.record(v, rows: Array(0..<self.micro), exit: 0, confidence: split.confidence)
        }
        let stageOutput = BlockedBuffer(BlockedShape(n: micro, c: 32, h: 16, w: 16, halo: 1))
        let survivors = Array(stride(from: 0, to: micro, by: 2))
        let gather = median(rounds: rounds) {
            self.engine.begin(batch: self.micro, recording: false)
            _ = self.engine.map(wrapping: stageOutput).gathering(rows: survivors).blocked()
        }
        return skipRow("exit", batch: n, active: m, fraction: fraction, full: full, ms: ms, gather: gather, scatter: nil,
                       decision: decision)
    }
}
