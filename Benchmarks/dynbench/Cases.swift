import DynamicInference
import Foundation

/// The benchmark cases, named as in `../shared/peers/netspec.py` so rows line up with the peers.
enum BenchCase {
    /// `conv{k}x{k}[s{stride}]_c{C}_k{K}_{H}x{W}`: one convolution with bias, padding k/2;
    /// `wgrad…` with the same fields: its weight gradient (the training kernel; same FLOPs).
    case conv(name: String, channels: Int, filters: Int, size: Int, kernel: Int = 3, stride: Int = 1,
              weightGradient: Bool = false)
    case resnet(name: String)

    static let convCases: [BenchCase] = [
        .conv(name: "conv3x3_c3_k64_32x32", channels: 3, filters: 64, size: 32),
        .conv(name: "conv3x3_c64_k64_32x32", channels: 64, filters: 64, size: 32),
        .conv(name: "conv3x3_c128_k128_16x16", channels: 128, filters: 128, size: 16),
        .conv(name: "conv3x3_c256_k256_8x8", channels: 256, filters: 256, size: 8),
        .conv(name: "conv3x3_c512_k512_4x4", channels: 512, filters: 512, size: 4),
    ]
    static let modelCases: [BenchCase] = ["resnet18_cifar", "resnet56_cifar", "resnet110_cifar"].map { .resnet(name: $0) }
    static let all = convCases + modelCases

    var name: String {
        switch self { case .conv(let n, _, _, _, _, _, _), .resnet(let n): return n }
    }

    static func named(_ n: String) -> BenchCase? {
        if let c = all.first(where: { $0.name == n }) { return c }
        // Any convolution shape, e.g. conv1x1s2_c64_k128_32x32 (or its weight gradient, wgrad…).
        let parts = n.split(separator: "_")
        let wgrad = parts.first?.hasPrefix("wgrad") == true
        if parts.count == 4, parts[0].hasPrefix("conv") || wgrad, parts[1].hasPrefix("c"), parts[2].hasPrefix("k"),
           let c = Int(parts[1].dropFirst()), let k = Int(parts[2].dropFirst()),
           let size = Int(parts[3].split(separator: "x")[0]) {
            let geo = parts[0].dropFirst(wgrad ? 5 : 4).split(separator: "s")
            let kernel = Int(geo[0].split(separator: "x")[0]) ?? 3
            let stride = geo.count > 1 ? Int(geo[1]) ?? 1 : 1
            return .conv(name: n, channels: c, filters: k, size: size, kernel: kernel, stride: stride, weightGradient: wgrad)
        }
        // Any CIFAR ResNet depth 6n+2, e.g. resnet20_cifar.
        if n.hasPrefix("resnet"), n.hasSuffix("_cifar"), let d = Int(n.dropFirst(6).dropLast(6)), d >= 8, (d - 2) % 6 == 0 {
            return .resnet(name: n)
        }
        return nil
    }

    /// A runnable closure for one batch size and thread count, plus FLOPs per image (2 × MACs).
    func prepare(batch: Int, threads: Int) -> (run: () -> Void, flopsPerImage: Double) {
        var rng = SeededRNG(seed: 0)
        switch self {
        case .conv(_, let c, let k, let s, let kernel, let stride, let wgrad):
            let cfg = Conv2DConfig(inChannels: c, outChannels: k, kernelSize: kernel, stride: stride, padding: kernel / 2)
            if wgrad {
                let input = BlockedBuffer(Tensor.normal([batch, c, s, s], rng: &rng), halo: 1)
                let o = cfg.outputSize(h: s, w: s)
                let dy = BlockedBuffer(Tensor.normal([batch, k, o.h, o.w], rng: &rng), halo: 1)
                return ({ _ = BlockedConvWeightGradient.compute(input: input, gradOutput: dy, config: cfg, threads: threads) },
                        Double(2 * cfg.macs(h: s, w: s)))
            }
            let conv = BlockedConv2D(weight: Tensor.normal(cfg.weightShape, rng: &rng), bias: Tensor.normal([k], rng: &rng),
                                     config: cfg)
            let x = Tensor.normal([batch, c, s, s], rng: &rng)
            let input = BlockedBuffer(x, halo: 1)
            let output = BlockedBuffer(conv.outputShape(n: batch, h: s, w: s, halo: 1))
            let flops = Double(2 * cfg.macs(h: s, w: s))
            let run: () -> Void = c < 8
                ? { conv.run(nchw: x, into: output, threads: threads) }
                : { conv.run(input, into: output, threads: threads) }
            return (run, flops)
        case .resnet(let name):
            let model: CIFARResNet = name == "resnet18_cifar"
                ? .resnet18() : .depth(Int(name.dropFirst(6).dropLast(6))!)
            model.eval()
            model.setThreads(threads)
            let x = Tensor.normal([batch, 3, 32, 32], rng: &rng)
            return ({ _ = model(x) }, Double(2 * model.macsPerImage()))
        }
    }
}
