import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import TestSupport
import XCTest

/// Ops and models against outputs PyTorch produced (scripts/make_fixtures.py). Both the fast
/// path (`Ops`) and the oracle (`Reference`) must land within 1e-4 relative error.
final class PyTorchFixtureTests: XCTestCase {
    struct OpCase {
        var name: String
        var file: SafeTensorsFile
        var params: [String: Any]
        func t(_ k: String) -> Tensor { file.tensors[k]! }
        func ints(_ k: String) -> [Int] { (params[k] as? [Any])?.compactMap { ($0 as? NSNumber)?.intValue } ?? [] }
        func bool(_ k: String) -> Bool { (params[k] as? NSNumber)?.boolValue ?? false }
        func float(_ k: String) -> Float { (params[k] as? NSNumber)?.floatValue ?? 0 }
    }

    static func opCases() throws -> [OpCase] {
        let dir = fixturesURL.appendingPathComponent("ops")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".safetensors") }.sorted()
        return try files.map { f in
            let file = try SafeTensors.read(contentsOf: dir.appendingPathComponent(f))
            let json = file.metadata["params"] ?? "{}"
            let params = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any] ?? [:]
            return OpCase(name: String(f.dropLast(12)), file: file, params: params)
        }
    }

    /// Runs one fixture with the fast ops and with the reference; returns (fast, reference).
    func run(_ c: OpCase) throws -> (Tensor, Tensor) {
        let op = c.file.metadata["op"] ?? ""
        let x = c.t("x")
        switch op {
        case "conv2d":
            let w = c.t("weight"), k = (w.shape[2], w.shape[3])
            let s = c.ints("stride"), p = c.ints("padding"), d = c.ints("dilation")
            let g = (c.params["groups"] as? NSNumber)?.intValue ?? 1
            let cfg = Conv2DConfig(inChannels: x.shape[1], outChannels: w.shape[0], kernelSize: k, stride: (s[0], s[1]),
                                   padding: (p[0], p[1]), dilation: (d[0], d[1]), groups: g)
            let b = c.file.tensors["bias"]
            XCTAssertEqual(b != nil, c.bool("bias"), c.name)
            return (Ops.conv2d(x, weight: w, bias: b, config: cfg), Reference.conv2d(x, weight: w, bias: b, config: cfg))
        case "batchnorm":
            let eps = c.float("eps")
            return (Ops.batchNorm(x, gamma: c.t("gamma"), beta: c.t("beta"), mean: c.t("mean"), variance: c.t("var"), eps: eps),
                    Reference.batchNorm(x, gamma: c.t("gamma"), beta: c.t("beta"), mean: c.t("mean"), variance: c.t("var"), eps: eps))
        case "conv_bn":
            let w = c.t("weight"), s = c.ints("stride"), p = c.ints("padding")
            let cfg = Conv2DConfig(inChannels: x.shape[1], outChannels: w.shape[0], kernelSize: (w.shape[2], w.shape[3]),
                                   stride: (s[0], s[1]), padding: (p[0], p[1]))
            let f = Ops.foldBatchNorm(weight: w, bias: nil, gamma: c.t("gamma"), beta: c.t("beta"), mean: c.t("mean"),
                                      variance: c.t("var"), eps: c.float("eps"))
            let ref = Reference.batchNorm(Reference.conv2d(x, weight: w, config: cfg), gamma: c.t("gamma"), beta: c.t("beta"),
                                          mean: c.t("mean"), variance: c.t("var"), eps: c.float("eps"))
            return (Ops.conv2d(x, weight: f.weight, bias: f.bias, config: cfg), ref)
        case "relu": return (Ops.relu(x), Reference.relu(x))
        case "relu1": return (Ops.relu1(x), Reference.relu1(x))
        case "leaky_relu1":
            let s = c.float("slope")
            return (Ops.leakyRelu1(x, slope: s), Reference.leakyRelu1(x, slope: s))
        case "maxpool", "avgpool":
            let cfg = Pool2DConfig(kernelSize: c.ints("kernel")[0], stride: c.ints("stride")[0], padding: c.ints("padding")[0],
                                   countIncludePad: c.params["count_include_pad"] == nil || c.bool("count_include_pad"))
            return op == "maxpool" ? (Ops.maxPool2d(x, cfg), Reference.maxPool2d(x, cfg))
                : (Ops.avgPool2d(x, cfg), Reference.avgPool2d(x, cfg))
        case "global_avgpool": return (Ops.globalAvgPool(x), Reference.globalAvgPool(x))
        case "linear":
            return (Ops.linear(x, weight: c.t("weight"), bias: c.t("bias")),
                    Reference.linear(x, weight: c.t("weight"), bias: c.t("bias")))
        case "softmax": return (Ops.softmax(x), Reference.softmax(x))
        case "log_softmax": return (Ops.logSoftmax(x), Reference.logSoftmax(x))
        case "concat": return (Ops.concatChannels([x, c.t("x2")]), Reference.concatChannels([x, c.t("x2")]))
        case "add":
            let act: Activation = c.bool("relu") ? .relu : .identity
            return (Ops.add(x, c.t("x2"), activation: act), Reference.add(x, c.t("x2"), activation: act))
        case "resize_bilinear":
            let size = c.ints("size")
            XCTAssertTrue(c.bool("align_corners"))
            return (Ops.resizeBilinearAlignCorners(x, height: size[0], width: size[1]),
                    Reference.resizeBilinearAlignCorners(x, height: size[0], width: size[1]))
        case "flatten": return (Ops.flatten(x), x.reshaped([x.shape[0], -1]))
        default:
            XCTFail("fixture \(c.name) has unknown op \(op)")
            return (x, x)
        }
    }

    func testEveryOpMatchesPyTorch() throws {
        let cases = try Self.opCases()
        XCTAssertGreaterThanOrEqual(cases.count, 35)
        var report: [String] = []
        var covered = Set<String>()
        for c in cases {
            let (fast, ref) = try run(c)
            let y = c.t("y")
            let e1 = assertClose(fast, y, tol: 1e-4, "\(c.name) fast path vs PyTorch")
            let e2 = assertClose(ref, y, tol: 1e-4, "\(c.name) reference vs PyTorch")
            // Convolutions without groups also go through the NCHW8c kernel models use.
            if c.file.metadata["op"] == "conv2d", (c.params["groups"] as? NSNumber)?.intValue ?? 1 == 1 {
                let w = c.t("weight"), st = c.ints("stride"), p = c.ints("padding"), d = c.ints("dilation")
                let cfg = Conv2DConfig(inChannels: c.t("x").shape[1], outChannels: w.shape[0],
                                       kernelSize: (w.shape[2], w.shape[3]), stride: (st[0], st[1]),
                                       padding: (p[0], p[1]), dilation: (d[0], d[1]))
                let blocked = BlockedConv2D(weight: w, bias: c.file.tensors["bias"], config: cfg)
                let e3 = assertClose(blocked(c.t("x"), threads: 2), y, tol: 1e-4, "\(c.name) NCHW8c kernel vs PyTorch")
                report.append(String(format: "%-24@ NCHW8c kernel %.2e", c.name as NSString, e3))
            }
            covered.insert(c.file.metadata["op"] ?? "")
            report.append(String(format: "%-24@ fast %.2e  reference %.2e", c.name as NSString, e1, e2))
        }
        XCTAssertEqual(covered, ["conv2d", "batchnorm", "conv_bn", "relu", "relu1", "leaky_relu1", "maxpool", "avgpool",
                                 "global_avgpool", "linear", "softmax", "log_softmax", "concat", "add", "resize_bilinear",
                                 "flatten"])
        print("PyTorch op fixtures (max relative error):\n" + report.joined(separator: "\n"))
    }

    func testHashUniformMatchesNumpy() throws {
        let f = try loadFixture("models/hash_uniform_check.safetensors")
        XCTAssertEqual(String(Tensor.fnv1a64("a")), f.metadata["seed_a"])
        let a = Tensor.hashUniform([7, 5], seed: Tensor.fnv1a64("a"), low: -1, high: 1)
        XCTAssertEqual(a.scalars, f.tensors["a"]!.scalars)
        let w = f.tensors["conv1.weight"]!
        let b = Float((6.0 / 27.0).squareRoot())
        XCTAssertEqual(Tensor.hashUniform(w.shape, seed: Tensor.fnv1a64("conv1.weight"), low: -b, high: b).scalars, w.scalars)
    }

}
