import DynamicInference
import Foundation

// `dynbench flops` and `dynbench check-logits`: an early-exit network's cost per exit, and its
// logits against a file of reference outputs.

let exitUsage = """
usage: dynbench flops --model ranet|msdnet --preset NAME [--classes N] [--json FILE]
       dynbench check-logits --model ranet|msdnet --preset NAME --weights W.safetensors --io IO.safetensors
                             [--classes N] [--threads T]
  flops         cumulative cost at every exit, counted by the engine from what it ran, one image at
                the preset's resolution (32×32 CIFAR, 224×224 ImageNet): reference MFLOPs (the rule of
                the authors' op_counter.py: convolution multiply-adds, one per ReLU output, pooling,
                linear weights + bias), 2 × MMACs (convolutions and linear layers), and parameters.
                JSON: {"exits": [{"exit": k, "mflops": x, "params": n, "macs": m}]}, exits 0-based.
  check-logits  loads W strictly (a state_dict of the authors' code saved as safetensors), runs the
                tensor `input` of IO and prints, for every exit k, max |ours − theirs| ÷ max |theirs|
                against the tensor `exit{k}`; exits with status 1 above 1e-4.
"""

/// The network a `--model` / `--preset` pair names, for images of its preset's resolution.
func earlyExitNetwork(_ a: FlagArgs) throws -> (network: any EarlyExitNetwork, name: String, size: Int) {
    let family = try a.required("--model")
    let classes = try a.values["--classes"].map { _ in try a.int("--classes", 10, min: 1) }
    let preset = try a.required("--preset")
    switch family {
    case "ranet":
        guard let c = RANetConfig.preset(preset, classes: classes) else {
            throw ConfigurationError.unknownPreset(model: "RANet", name: preset, known: RANetConfig.presetNames)
        }
        return (try RANet(c), "ranet_\(preset)", c.stem == .cifar ? 32 : 224)
    case "msdnet":
        guard let c = MSDNetConfig.preset(preset, classes: classes) else {
            throw ConfigurationError.unknownPreset(model: "MSDNet", name: preset, known: MSDNetConfig.presetNames)
        }
        return (try MSDNet(c), "msdnet_\(preset)", c.stem == .cifar ? 32 : 224)
    default:
        throw CLIError(description: "--model takes ranet or msdnet\n\(exitUsage)")
    }
}

struct ExitFigures: Codable {
    struct Exit: Codable { var exit: Int, mflops: Double, params: Int, macs: Int }
    var model: String
    var resolution: Int
    var exits: [Exit]
}

func runFlops(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--model", "--preset", "--classes", "--json"], usage: exitUsage)
    let (net, name, size) = try earlyExitNetwork(a)
    net.eval()
    let figures = try exitFigures(ExitSubject(net, name: name, size: size))
    print("\(name), \(size)×\(size): cumulative at each exit (reference MFLOPs: op_counter.py's rule; GFLOPs = 2 × MACs)")
    print("exit  reference MFLOPs   2×MACs MFLOPs   parameters")
    for e in figures.exits {
        print(String(format: "%4d  %16.2f  %14.2f  %11d", e.exit, e.mflops, 2 * Double(e.macs) / 1e6, e.params))
    }
    if let path = a.string("--json") {
        try writeJSON(figures, to: path)
    }
}

func runCheckLogits(_ argv: [String], kernels: KernelOptions) throws {
    let a = try FlagArgs(argv, switches: [], known: ["--model", "--preset", "--classes", "--weights", "--io", "--threads"],
                         usage: exitUsage)
    let (net, name, _) = try earlyExitNetwork(a)
    let weights = URL(fileURLWithPath: try a.required("--weights"))
    let report = try net.load(from: weights, strict: true)
    net.eval()
    let io = try SafeTensors.read(contentsOf: URL(fileURLWithPath: try a.required("--io")))
    guard let x = io.tensors["input"] else { throw CLIError(description: "\(a.string("--io")!) has no tensor `input`") }
    let threads = try a.int("--threads", Parallel.coreCount, min: 1)
    let outputs = try net.analyze(x, engine: Engine(threads: threads, kernels: kernels)).outputs
    print("\(name): \(report.loaded.count) tensors loaded strictly from \(weights.lastPathComponent); input \(x.shape)")
    var worst: Float = 0
    for (k, y) in outputs.enumerated() {
        guard let want = io.tensors["exit\(k)"] else { throw CLIError(description: "the IO file has no tensor exit\(k)") }
        guard want.shape == y.shape else { throw CLIError(description: "exit\(k): ours \(y.shape), theirs \(want.shape)") }
        let e = y.maxRelativeError(want)
        worst = max(worst, e)
        print(String(format: "exit %d: max relative error %.2e", k, e))
    }
    if outputs.count != io.tensors.keys.filter({ $0.hasPrefix("exit") }).count {
        throw CLIError(description: "the IO file has \(io.tensors.keys.filter { $0.hasPrefix("exit") }.count) exits, the network \(outputs.count)")
    }
    if !(worst <= 1e-4) {
        print(String(format: "FAIL: %.2e > 1e-4", worst))
        exit(1)
    }
    print("ok: every exit within 1e-4")
}
