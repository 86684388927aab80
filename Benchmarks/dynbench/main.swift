import DynamicInference
import Foundation

// dynbench: the library's benchmark CLI. `dynbench` with no arguments runs a short default suite.

let usage = """
usage: dynbench [models|kernels|peak] [--cases NAME…] [--threads T…] [--batch B…]
                [--repeats R] [--warmup W] [--json FILE]
       dynbench compare PEER.json OURS.json
       dynbench train|eval|train-bench …   (dynbench train --help)
  --width simd8|simd16 (any command) runs the convolution kernels at that vector width; default:
            the widest this build targets (simd16 with AVX-512)
  --no-winograd (any command) runs 3×3 stride-1 convolutions on the direct kernels instead of
            Winograd F(2×2, 3×3) (16-lane builds, 16/32/64 input channels, even output sizes)
  models    ResNets forward: CIFAR (resnet18_cifar resnet56_cifar resnet110_cifar, the default) and
            torchvision ImageNet at 224×224 (--cases resnet18_imagenet resnet50_imagenet)
  kernels   single convolution passes by name: conv3x3_c64_k64_32x32 (forward), dgrad… (input
            gradient), wgrad… (weight gradient), any {pass}{k}x{k}[s{s}]_c{C}_k{K}_{H}x{W}; `catalog`
            runs every variant the tests check
  peak      measured FP32 FMA throughput of this machine (the % of peak denominator)
  compare   side-by-side table of two result files (peer first), ratio = our img/s ÷ peer's
  (none)    short default suite (< 1 min): every conv case at batch 1 on 1 thread, then
            ResNet-18/56 at batch 1 and 64 on 1 thread and on all cores
"""

struct Options {
    var command = "default"
    var cases: [String] = []
    var threads: [Int] = []
    var batches: [Int] = []
    var repeats = 10
    var warmup = 2
    var json: String?
}

func parse(_ args: [String]) throws -> Options {
    var o = Options()
    var rest = args
    if let first = rest.first, ["models", "kernels", "peak", "pool"].contains(first) {
        o.command = first
        rest.removeFirst()
    }
    let a = try FlagArgs(rest, switches: [], known: ["--cases", "--threads", "--batch", "--repeats", "--warmup", "--json"],
                         usage: usage)
    o.cases = a.values["--cases"] ?? []
    o.threads = try a.ints("--threads", [])
    o.batches = try a.ints("--batch", [])
    o.repeats = try a.int("--repeats", o.repeats, min: 1)
    o.warmup = try a.int("--warmup", o.warmup, min: 0)
    o.json = a.string("--json")
    return o
}

func runPeak(threads: [Int]) {
    let iters = 50_000_000
    for t in threads {
        var samples: [Double] = []
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            Parallel.forEach(t, threads: t) { i in _ = PeakProbe.fmaLoop(iterations: iters, seed: Float(i)) }
            samples.append(PeakProbe.flops(iterations: iters) * Double(t) / (Double(DispatchTime.now().uptimeNanoseconds - t0)))
        }
        print(String(format: "peak FMA throughput, %d thread(s): %.1f GFLOP/s (median of 5; best %.1f)",
                     t, Timing(samples: samples).median, samples.max()!))
    }
}

/// Thread-pool dispatch cost and balance: many tiny jobs of 16 tasks on all cores.
func runPoolProbe() {
    let threads = Parallel.coreCount
    for work in [0, 2_000, 20_000] {
        var callerShare = 0.0
        let calls = 20_000
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<calls {
            let me = Thread.current
            var mine = 0
            withUnsafeMutablePointer(to: &mine) { minePtr in
                Parallel.forEach(16, threads: threads) { _ in
                    var acc: Float = 0
                    for k in 0..<work { acc += Float(k) }
                    if acc == -1 { print(acc) }
                    if Thread.current == me { minePtr.pointee += 1 }
                }
            }
            callerShare += Double(mine) / 16
        }
        let us = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / Double(calls)
        print(String(format: "pool: 16 tasks × %6d adds, %d threads: %7.2f µs per call, caller ran %.0f%% of tasks",
                     work, threads, us, 100 * callerShare / Double(calls)))
    }
}

func run(_ o: Options) throws {
    warnAboutBuild()
    if o.command == "pool" { runPoolProbe(); return }
    if o.command == "peak" { runPeak(threads: o.threads.isEmpty ? [1, Parallel.coreCount] : o.threads); return }
    var names = o.cases
    if names.isEmpty {
        switch o.command {
        case "models": names = BenchCase.modelCases.map(\.name)
        case "kernels": names = BenchCase.convCases.map(\.name)
        default: names = BenchCase.convCases.map(\.name) + ["resnet18_cifar", "resnet56_cifar"]
        }
    }
    let isDefault = o.command == "default" && o.cases.isEmpty && o.threads.isEmpty && o.batches.isEmpty
    let cases = try names.flatMap { n -> [BenchCase] in
        guard let c = BenchCase.named(n) else {
            throw NSError(domain: "dynbench", code: 2, userInfo: [NSLocalizedDescriptionKey: "unknown case \(n)"])
        }
        return c
    }
    let threadList = o.threads.isEmpty ? (isDefault ? [1, Parallel.coreCount] : [Parallel.coreCount]) : o.threads
    let batchList = o.batches.isEmpty ? (isDefault ? [1, 64] : [1]) : o.batches
    print("dynbench — \(TargetFeatures.summary), \(Parallel.coreCount) cores; measured peak \(String(format: "%.1f", peakGFLOPsPerCore)) GFLOP/s per core")
    print(String(repeating: "-", count: 96))
    print("case".padding(toLength: 28, withPad: " ", startingAt: 0), "thr", "batch", " median ms", "   min–max ms     ",
          " img/s  ", "GFLOP/s", " % peak")
    var rows: [ResultRow] = []
    for c in cases {
        let isConv: Bool
        if case .conv = c { isConv = true } else { isConv = false }
        for t in (isDefault && isConv ? [1] : threadList) {
            for b in (isDefault && isConv ? [1] : batchList) {
                let (runCase, flops) = c.prepare(batch: b, threads: t)
                let timing = Timing.measure(warmup: o.warmup, repeats: o.repeats, minSeconds: 0.5, runCase)
                let gflops = flops * Double(b) / (timing.median / 1e3) / 1e9
                let row = ResultRow(framework: "dynbench", model: c.name, threads: t, batch: b, flops_per_image: flops,
                                    median_ms: timing.median, min_ms: timing.min, max_ms: timing.max,
                                    img_per_s: Double(b) / (timing.median / 1e3), gflops: gflops)
                rows.append(row)
                let pct = 100 * gflops / (peakGFLOPsPerCore * Double(t))
                print(c.name.padding(toLength: 28, withPad: " ", startingAt: 0),
                      String(format: "%3d %5d %10.3f  %7.3f–%-8.3f %8.1f %7.1f %6.1f%%",
                             t, b, timing.median, timing.min, timing.max, row.img_per_s, gflops, pct))
            }
        }
    }
    if let path = o.json {
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        try enc.encode(ResultFile(info: machineInfo(), results: rows)).write(to: URL(fileURLWithPath: path))
        print("wrote \(path)")
    }
}

/// Removes `--width simd8|simd16` from the arguments and sets the kernel width (every command).
func takeWidthOption(_ args: inout [String]) throws {
    guard let i = args.firstIndex(of: "--width") else { return }
    guard i + 1 < args.count, let w = KernelWidth(rawValue: args[i + 1]) else {
        throw CLIError(description: "--width takes simd8 or simd16")
    }
    KernelWidth.current = w
    args.removeSubrange(i...(i + 1))
}

do {
    var args = Array(CommandLine.arguments.dropFirst())
    try takeWidthOption(&args)
    if let i = args.firstIndex(of: "--no-winograd") {
        BlockedConv2D.allowsWinograd = false
        args.remove(at: i)
    }
    if args.first == "compare" {
        try runCompare(Array(args.dropFirst()))
        exit(0)
    }
    let sub: [String: ([String]) throws -> Void] = ["train": runTrain, "eval": runEval, "train-bench": runTrainBench]
    if let first = args.first, let command = sub[first] {
        try command(Array(args.dropFirst()))
        exit(0)
    }
    try run(parse(args))
} catch {
    FileHandle.standardError.write("dynbench: \(error)\n".data(using: .utf8)!)
    exit(2)
}
