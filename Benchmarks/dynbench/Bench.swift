import DynamicInference
import Foundation

/// One timed case: warm-up runs, then `repeats` timed runs; median and min–max in ms.
struct Timing {
    var samples: [Double]
    var median: Double { let s = samples.sorted(); return s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2 }
    var min: Double { samples.min() ?? 0 }
    var max: Double { samples.max() ?? 0 }

    static func measure(warmup: Int, repeats: Int, minSeconds: Double = 0, _ body: () -> Void) -> Timing {
        for _ in 0..<warmup { body() }
        var samples: [Double] = []
        let start = DispatchTime.now().uptimeNanoseconds
        while samples.count < repeats
            || Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 < minSeconds && samples.count < 10 * repeats {
            let t0 = DispatchTime.now().uptimeNanoseconds
            body()
            samples.append(Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e6)
        }
        return Timing(samples: samples)
    }
}

/// A row of the peers' JSON schema (`../shared/peers/ort_bench.py`).
struct ResultRow: Codable {
    var framework: String
    var model: String
    var threads: Int
    var batch: Int
    var flops_per_image: Double
    var median_ms: Double
    var min_ms: Double
    var max_ms: Double
    var img_per_s: Double
    var gflops: Double
}

struct ResultFile: Codable {
    var info: [String: String]
    var results: [ResultRow]
}

/// FP32 FMA peak of one core, measured at start-up with register-only FMAs (best of 5 runs of ~30 ms,
/// since other load only ever slows it down): clocks differ between machines of one kind, so
/// "% of peak" uses what this one does.
let peakGFLOPsPerCore: Double = {
    let iters = 20_000_000
    _ = PeakProbe.fmaLoop(iterations: iters, seed: 1)      // warm-up: clocks ramp after a build
    var samples: [Double] = []
    for _ in 0..<5 {
        let t0 = DispatchTime.now().uptimeNanoseconds
        _ = PeakProbe.fmaLoop(iterations: iters, seed: 1)
        samples.append(PeakProbe.flops(iterations: iters) / Double(DispatchTime.now().uptimeNanoseconds - t0))
    }
    return samples.max()!
}()

func machineInfo(kernels: KernelOptions) -> [String: String] {
    var info: [String: String] = [
        "framework": "dynbench (DynamicInference, Swift)",
        "target": "\(TargetFeatures.summary) \(kernels)",
        "cores": String(Parallel.coreCount),
        "peak_gflops_per_core_measured": String(format: "%.1f", peakGFLOPsPerCore),
        "date": ISO8601DateFormatter().string(from: Date()),
    ]
    if let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
       let line = cpu.split(separator: "\n").first(where: { $0.hasPrefix("model name") }) {
        func field(_ name: String) -> String? {
            cpu.split(separator: "\n").first { $0.hasPrefix(name) }?.split(separator: ":", maxSplits: 1).last
                .map { $0.trimmingCharacters(in: .whitespaces) }
        }
        // Virtual machines often name only the vendor ("AMD EPYC"): family and model tell the generation.
        info["cpu"] = (line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? "")
            + (field("cpu family").flatMap { f in field("model\t").map { " (family \(f) model \($0))" } } ?? "")
    }
    return info
}

/// Says loudly when the build leaves this CPU's vector units unused: no FMA (x86-64 baseline), or
/// AVX-512 present but not targeted (16-lane kernels would run at twice the FMA width).
func warnAboutBuild() {
    #if arch(x86_64)
    var problem: String?
    if !TargetFeatures.hasFMA {
        problem = "WITHOUT FMA/AVX2. Kernels run at a fraction of the machine's speed."
    } else if !TargetFeatures.hasAVX512, let cpu = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              cpu.split(separator: "\n").contains(where: { $0.hasPrefix("flags") && $0.contains(" avx512f") }) {
        problem = "for AVX2 on a CPU with AVX-512: the 16-lane kernels are not used."
    }
    if let problem {
        FileHandle.standardError.write("""
            WARNING: dynbench was built \(problem)
                     Build with: swift build -c release -Xswiftc -target-cpu -Xswiftc native


            """.data(using: .utf8)!)
    }
    #endif
}

/// Writes a result file: pretty, sorted keys; ±∞ and NaN (thresholds that never let a sample
/// leave) as the strings "Infinity", "-Infinity", "NaN", which `readJSON` and Python's
/// `float()` read back.
func writeJSON<T: Encodable>(_ value: T, to path: String) throws {
    let enc = JSONEncoder()
    enc.outputFormatting = [.prettyPrinted, .sortedKeys]
    enc.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
    try enc.encode(value).write(to: URL(fileURLWithPath: path))
    print("wrote \(path)")
}

/// Reads a file `writeJSON` wrote.
func readJSON<T: Decodable>(_ type: T.Type, from path: String) throws -> T {
    let dec = JSONDecoder()
    dec.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
    return try dec.decode(type, from: Data(contentsOf: URL(fileURLWithPath: path)))
}
