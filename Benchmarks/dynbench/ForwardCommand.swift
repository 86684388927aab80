import DynamicInference
import Foundation

// `dynbench models`, `dynbench kernels` and the default suite: forward passes timed per case.

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

func run(_ o: Options, kernels: KernelOptions) throws {
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
        guard let c = BenchCase.named(n) else { throw CLIError(description: "unknown case \(n)") }
        return c
    }
    let threadList = o.threads.isEmpty ? (isDefault ? [1, Parallel.coreCount] : [Parallel.coreCount]) : o.threads
    let batchList = o.batches.isEmpty ? (isDefault ? [1, 64] : [1]) : o.batches
    print("dynbench — \(TargetFeatures.summary) \(kernels), \(Parallel.coreCount) cores; measured peak \(String(format: "%.1f", peakGFLOPsPerCore)) GFLOP/s per core")
    print(String(repeating: "-", count: 96))
    print("case".padding(toLength: 28, withPad: " ", startingAt: 0), "thr", "batch", " median ms", "   min–max ms     ",
          " img/s  ", "GFLOP/s", " % peak")
    var rows: [ResultRow] = []
    for c in cases {
        let isConv: Bool
        if case .conv = c { isConv = true } else { isConv = false }
        for t in (isDefault && isConv ? [1] : threadList) {
            for b in (isDefault && isConv ? [1] : batchList) {
                let (runCase, flops) = try c.prepare(batch: b, threads: t, kernels: kernels)
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
        try writeJSON(ResultFile(info: machineInfo(kernels: kernels), results: rows), to: path)
    }
}

