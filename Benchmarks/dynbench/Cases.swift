import DynamicInference
import Foundation

/// The benchmark cases, named as in `../shared/peers/netspec.py` so rows line up with the peers.
enum BenchCase {
    /// A convolution pass by `ConvVariant` name: `conv…`, `dgrad…` (input gradient), `wgrad…`.
    case conv(ConvVariant)
    case resnet(name: String)
    /// torchvision's ResNet-18/50 at 224×224 (`resnet18_imagenet`, `resnet50_imagenet`).
    case imagenet(name: String)

    static let convCases: [BenchCase] = ["conv3x3_c3_k64_32x32", "conv3x3_c64_k64_32x32", "conv3x3_c128_k128_16x16",
                                         "conv3x3_c256_k256_8x8", "conv3x3_c512_k512_4x4"].map { .conv(ConvVariant(name: $0)!) }
    static let modelCases: [BenchCase] = ["resnet18_cifar", "resnet56_cifar", "resnet110_cifar"].map { .resnet(name: $0) }
    static let imagenetCases: [BenchCase] = ["resnet18_imagenet", "resnet50_imagenet"].map { .imagenet(name: $0) }
    static let all = convCases + modelCases + imagenetCases

    var name: String {
        switch self { case .conv(let v): return v.name; case .resnet(let n), .imagenet(let n): return n }
    }

    /// A case by name; `catalog` expands to every `ConvVariant.catalog` entry (the variants the tests check).
    static func named(_ n: String) -> [BenchCase]? {
        if n == "catalog" { return ConvVariant.catalog.map { .conv($0) } }
        if let c = all.first(where: { $0.name == n }) { return [c] }
        // Any convolution pass, e.g. conv1x1s2_c64_k128_32x32 or wgrad3x3_c16_k16_32x32.
        if let v = ConvVariant(name: n) { return [.conv(v)] }
        // Any CIFAR ResNet depth 6n+2, e.g. resnet20_cifar.
        if n.hasPrefix("resnet"), n.hasSuffix("_cifar"), let d = Int(n.dropFirst(6).dropLast(6)), d >= 8, (d - 2) % 6 == 0 {
            return [.resnet(name: n)]
        }
        return nil
    }

    /// A runnable closure for one batch size and thread count, plus FLOPs per image (2 × MACs).
    func prepare(batch: Int, threads: Int) -> (run: () -> Void, flopsPerImage: Double) {
        switch self {
        case .conv(let v):
            return (v.prepare(batch: batch, threads: threads), Double(v.flopsPerImage))
        case .resnet(let name):
            var rng = SeededRNG(seed: 0)
            let model: CIFARResNet = name == "resnet18_cifar"
                ? .resnet18() : .depth(Int(name.dropFirst(6).dropLast(6))!)
            model.eval()
            model.setThreads(threads)
            let x = Tensor.normal([batch, 3, 32, 32], rng: &rng)
            return ({ _ = model(x) }, Double(2 * model.macsPerImage()))
        case .imagenet(let name):
            var rng = SeededRNG(seed: 0)
            let model: ImageNetResNet = name == "resnet50_imagenet" ? .resnet50() : .resnet18()
            model.eval()
            model.threads = threads
            let x = Tensor.normal([batch, 3, 224, 224], rng: &rng)
            return ({ _ = model(x) }, Double(2 * model.macsPerImage()))
        }
    }
}
