import DynamicInference
import Foundation

/// The forward benchmark cases, named as in `../shared/peers/netspec.py` so rows line up with the
/// peers: single convolution passes (`ConvVariant`) and the registry's networks.
enum BenchCase {
    /// A convolution pass by `ConvVariant` name: `conv…`, `dgrad…` (input gradient), `wgrad…`.
    case conv(ConvVariant)
    /// A network of `ModelRegistry` on its entry's benchmark input, eval mode.
    case model(String)

    static let convCases: [BenchCase] = ["conv3x3_c3_k64_32x32", "conv3x3_c64_k64_32x32", "conv3x3_c128_k128_16x16",
                                         "conv3x3_c256_k256_8x8", "conv3x3_c512_k512_4x4"].map { .conv(ConvVariant(name: $0)!) }
    /// `dynbench models` without `--cases`: the CIFAR ResNets.
    static let modelCases: [BenchCase] = ModelRegistry.cifarResNet.benchmarkNames.map { .model($0) }

    var name: String {
        switch self { case .conv(let v): return v.name; case .model(let n): return n }
    }

    /// A case by name; `catalog` expands to every `ConvVariant.catalog` entry (the variants the tests check).
    static func named(_ n: String) -> [BenchCase]? {
        if n == "catalog" { return ConvVariant.catalog.map { .conv($0) } }
        // Any convolution pass, e.g. conv1x1s2_c64_k128_32x32 or wgrad3x3_c16_k16_32x32.
        if let v = ConvVariant(name: n) { return [.conv(v)] }
        return ModelRegistry.entry(named: n) != nil ? [.model(n)] : nil
    }

    /// A runnable closure for one batch size and thread count, plus FLOPs per image (2 × MACs).
    func prepare(batch: Int, threads: Int, kernels: KernelOptions) throws -> (run: () -> Void, flopsPerImage: Double) {
        switch self {
        case .conv(let v):
            return (v.prepare(batch: batch, threads: threads, options: kernels), Double(v.flopsPerImage))
        case .model(let name):
            let input = ModelRegistry.entry(named: name)!.benchmarkInput
            let m = try ModelRegistry.build(name, for: input)
            m.network.eval()
            m.setThreads(threads)
            var rng = SeededRNG(seed: 0)
            let x = Tensor.normal([batch, input.channels, input.height, input.width], rng: &rng)
            let network = m.network, micro = network.inferenceMicroBatch(height: input.height, width: input.width)
            let engine = Engine(threads: threads, kernels: kernels)
            return ({ _ = engine.runMicroBatches(x, microBatch: micro, outputs: network.outputs) }, Double(2 * m.macsPerImage))
        }
    }
}
