import DynamicInference
import Foundation

// dynbench: the library's benchmark CLI. `dynbench` with no arguments runs a short default suite.

let usage = """
usage: dynbench [models|kernels|peak] [--cases NAME…] [--threads T…] [--batch B…]
                [--repeats R] [--warmup W] [--json FILE]
       dynbench compare PEER.json OURS.json
       dynbench train|eval|train-bench …   (dynbench train --help)
       dynbench skip …   m of N samples active vs the dense computation (dynbench skip --help)
       dynbench flops|check-logits|exits --model ranet|msdnet --preset NAME …   (dynbench flops --help,
                 dynbench exits --help); dynbench exits --model resnetN … measures a dense network as one exit
       dynbench exits-plot --reports R.json… --json OUT --svg DIR   several networks' exits reports side by side
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

/// Removes `--width simd8|simd16` and `--no-winograd` from the arguments: the kernels every
/// command runs on.
func takeKernelOptions(_ args: inout [String]) throws -> KernelOptions {
    var options = KernelOptions.fastest
    if let i = args.firstIndex(of: "--width") {
        guard i + 1 < args.count, let w = KernelWidth(rawValue: args[i + 1]) else {
            throw CLIError(description: "--width takes simd8 or simd16")
        }
        options.width = w
        args.removeSubrange(i...(i + 1))
    }
    if let i = args.firstIndex(of: "--no-winograd") {
        options.winograd = false
        args.remove(at: i)
    }
    return options
}

do {
    var args = Array(CommandLine.arguments.dropFirst())
    let kernels = try takeKernelOptions(&args)
    let sub: [String: ([String], KernelOptions) throws -> Void] = ["train": runTrain, "eval": runEval, "train-bench": runTrainBench,
                                                    "compare": runCompare, "skip": runSkip,
                                                    "flops": runFlops, "check-logits": runCheckLogits, "exits": runExits,
                                                    "exits-plot": runExitsPlot]
    if let first = args.first, let command = sub[first] {
        try command(Array(args.dropFirst()), kernels)
        exit(0)
    }
    try run(parse(args), kernels: kernels)
} catch {
    FileHandle.standardError.write("dynbench: \(error)\n".data(using: .utf8)!)
    exit(2)
}
