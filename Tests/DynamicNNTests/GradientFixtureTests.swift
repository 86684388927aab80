import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import TestSupport
import XCTest

/// Backward passes, optimizer steps and LR schedules against PyTorch
/// (scripts/make_grad_fixtures.py). Layers are driven through their public training API.
final class GradientFixtureTests: XCTestCase {
    struct Case {
        var name: String
        var file: SafeTensorsFile
        var params: [String: Any]
        func t(_ k: String) -> Tensor { file.tensors[k]! }
        func int(_ k: String) -> Int { (params[k] as? NSNumber)?.intValue ?? 0 }
        func float(_ k: String) -> Float { (params[k] as? NSNumber)?.floatValue ?? 0 }
    }

    static func gradCases(op: String) throws -> [Case] {
        let dir = fixturesURL.appendingPathComponent("grad")
        let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".safetensors") }
        return try names.sorted().compactMap { f in
            let file = try SafeTensors.read(contentsOf: dir.appendingPathComponent(f))
            guard file.metadata["op"] == op else { return nil }
            let params = try JSONSerialization.jsonObject(with: Data((file.metadata["params"] ?? "{}").utf8)) as? [String: Any]
            return Case(name: String(f.dropLast(12)), file: file, params: params ?? [:])
        }
    }

    func testConv2dGradients() throws {
        let cases = try Self.gradCases(op: "conv2d")
        XCTAssertEqual(cases.count, 9)
        for c in cases {
            let x = c.t("x"), w = c.t("weight")
            let cfg = Conv2DConfig(inChannels: x.shape[1], outChannels: w.shape[0], kernelSize: w.shape[2],
                                   stride: c.int("stride"), padding: c.int("padding"), dilation: c.int("dilation"),
                                   groups: c.int("groups"))
            var rng = SeededRNG(seed: 0)
            let conv = Conv2d(cfg, bias: c.file.tensors["bias"] != nil, rng: &rng)
            conv.weight.value = w
            if let b = c.file.tensors["bias"] { conv.bias!.value = b }
            conv.train()
            _ = conv(x)
            assertClose(conv.backward(c.t("dy")), c.t("dx"), tol: 1e-5, "\(c.name) dx")
            assertClose(conv.weight.grad!, c.t("dweight"), tol: 1e-5, "\(c.name) dweight")
            if let db = c.file.tensors["dbias"] { assertClose(conv.bias!.grad!, db, tol: 1e-5, "\(c.name) dbias") }
            // The reference twins agree with PyTorch too.
            assertClose(Reference.conv2dBackwardInput(c.t("dy"), weight: w, config: cfg, inputHeight: x.shape[2],
                                                      inputWidth: x.shape[3]), c.t("dx"), tol: 1e-6, "\(c.name) ref dx")
            assertClose(Reference.conv2dBackwardWeight(c.t("dy"), input: x, config: cfg), c.t("dweight"), tol: 1e-6,
                        "\(c.name) ref dweight")
        }
    }

    func testBatchNormTrainingGradientsAndRunningStatistics() throws {
        let cases = try Self.gradCases(op: "batchnorm_train")
        XCTAssertEqual(cases.count, 2)
        for c in cases {
            let x = c.t("x")
            let bn = BatchNorm2d(x.shape[1], eps: c.float("eps"), momentum: c.float("momentum"))
            bn.weight.value = c.t("gamma")
            bn.bias.value = c.t("beta")
            bn.runningMean.value = c.t("running_mean")
            bn.runningVar.value = c.t("running_var")
            bn.train()
            assertClose(bn(x), c.t("y"), tol: 1e-5, "\(c.name) y")
            // PyTorch's momentum rule with the unbiased batch variance.
            assertClose(bn.runningMean.value, c.t("running_mean_after"), tol: 1e-6, "\(c.name) running mean")
            assertClose(bn.runningVar.value, c.t("running_var_after"), tol: 1e-6, "\(c.name) running var")
            assertClose(bn.backward(c.t("dy")), c.t("dx"), tol: 1e-5, "\(c.name) dx")
            assertClose(bn.weight.grad!, c.t("dgamma"), tol: 1e-5, "\(c.name) dgamma")
            assertClose(bn.bias.grad!, c.t("dbeta"), tol: 1e-5, "\(c.name) dbeta")
        }
    }

    func testLinearGradients() throws {
        let c = try XCTUnwrap(Self.gradCases(op: "linear").first)
        var rng = SeededRNG(seed: 0)
        let w = c.t("weight")
        let layer = Linear(w.shape[1], w.shape[0], rng: &rng)
        layer.weight.value = w
        layer.bias!.value = c.t("bias")
        layer.train()
        _ = layer(c.t("x"))
        assertClose(layer.backward(c.t("dy")), c.t("dx"), tol: 1e-5, "dx")
        assertClose(layer.weight.grad!, c.t("dweight"), tol: 1e-5, "dweight")
        assertClose(layer.bias!.grad!, c.t("dbias"), tol: 1e-5, "dbias")
    }

    func testCrossEntropyWithAndWithoutLabelSmoothing() throws {
        let cases = try Self.gradCases(op: "cross_entropy")
        XCTAssertEqual(cases.count, 2)
        for c in cases {
            let labels = try XCTUnwrap(c.file.integerEntries["labels"]).values.map(Int.init)
            let l = Loss.crossEntropy(logits: c.t("logits"), labels: labels, labelSmoothing: c.float("label_smoothing"))
            XCTAssertEqual(l.value, c.t("loss").scalars[0], accuracy: 1e-6 * c.t("loss").scalars[0], c.name)
            assertClose(l.gradient, c.t("dlogits"), tol: 1e-5, c.name)
        }
    }

    func testResizeAndPoolingGradients() throws {
        for c in try Self.gradCases(op: "resize") {
            let x = c.t("x"), dy = c.t("dy")
            assertClose(Ops.resizeBilinearAlignCorners(x, height: dy.shape[2], width: dy.shape[3]), c.t("y"), tol: 1e-5)
            assertClose(Ops.resizeBilinearAlignCornersBackward(dy, inputHeight: x.shape[2], inputWidth: x.shape[3]),
                        c.t("dx"), tol: 1e-5, c.name)
        }
        var pools = 0
        for op in ["maxpool", "avgpool"] {
            for c in try Self.gradCases(op: op) {
                let layer: any Differentiable = op == "maxpool"
                    ? MaxPool2d(kernelSize: c.int("kernel"), stride: c.int("stride"), padding: c.int("padding"))
                    : AvgPool2d(kernelSize: c.int("kernel"), stride: c.int("stride"), padding: c.int("padding"),
                                countIncludePad: (c.params["count_include_pad"] as? Bool) ?? true)
                layer.train()
                _ = layer(c.t("x"))
                assertClose(layer.backward(c.t("dy")), c.t("dx"), tol: 1e-6, c.name)
                pools += 1
            }
        }
        XCTAssertEqual(pools, 3)
    }

    func testOptimizerStepsMatchPyTorch() throws {
        let c = try XCTUnwrap(Self.gradCases(op: "optimizer").first)
        let steps = 3
        func run(_ prefix: String, tol: Float, _ make: ([Parameter]) -> any Optimizer) {
            let ps = (0..<3).map { Parameter(c.t("p\($0)")) }
            let opt = make(ps)
            for s in 0..<steps {
                for (i, p) in ps.enumerated() { p.grad = c.t("grad.\(s).\(i)") }
                opt.step()
                for (i, p) in ps.enumerated() { assertClose(p.value, c.t("\(prefix).\(s).\(i)"), tol: tol, "\(prefix) step \(s) p\(i)") }
            }
        }
        run("sgd", tol: 1e-6) { ps in
            SGD(groups: [ParameterGroup([ps[0], ps[1]], learningRate: 0.1, weightDecay: 0.01),
                         ParameterGroup([ps[2]], learningRate: 0.05)], momentum: 0.9, nesterov: true)
        }
        run("adam", tol: 1e-6) { Adam($0, learningRate: 0.01, weightDecay: 0.01) }
        run("adamw", tol: 1e-6) { Adam.adamW($0, learningRate: 0.01, weightDecay: 0.1) }
    }

    func testLearningRateSchedulesMatchPyTorch() throws {
        let c = try XCTUnwrap(Self.gradCases(op: "schedules").first)
        let schedules: [(String, LRSchedule)] = [
            ("multistep", .multiStep(milestones: [3, 7], gamma: 0.1)),
            ("cosine", .cosine(steps: 10, minFactor: 0.001 / 0.1)),
            ("warmup_cosine", .warmup(steps: 4, startFactor: 0.1, then: .cosine(steps: 8, minFactor: 0))),
        ]
        for (name, schedule) in schedules {
            let expected = c.t(name).scalars
            XCTAssertEqual(expected.count, 12)
            for (t, lr) in expected.enumerated() {
                XCTAssertEqual(Float(0.1 * schedule.factor(at: t)), lr, accuracy: 1e-6 * max(lr, 1e-3), "\(name) t=\(t)")
            }
        }
    }
}
