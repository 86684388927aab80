import Backbones
import DynamicCore
import DynamicNN
import EarlyExit
import TestSupport
import XCTest

/// The early-exit ResNet's deployment forward (samples stop at their exit, the rest go on as a
/// smaller batch) against its analysis forward (every exit, nothing skipped); the cost of each
/// sample against the analytic cost up to its exit; the policies' edge cases and typed errors.
final class ResNetWithExitsTests: XCTestCase {
    private func model(seed: UInt64 = 1) -> ResNetWithExits {
        let m = ResNetWithExits.depth(8, seed: seed)
        var rng = SeededRNG(seed: seed &+ 10)
        for (key, p) in m.namedParameters() where p.value.rank == 1 && !key.hasPrefix("exits") && !key.hasPrefix("linear") {
            p.value = key.hasSuffix("running_mean") || key.hasSuffix("bias")
                ? Tensor.normal(p.shape, std: 0.1, rng: &rng) : Tensor.uniform(p.shape, low: 0.5, high: 1.5, rng: &rng)
        }
        return m.eval()
    }

    /// Analytic cost of one h × w sample that leaves at `exit`, by the reference counter's rules:
    /// convolutions (MACs), a ReLU per output, the global pool (C·H·W) and each classifier up to
    /// that exit (weights, + bias in reference FLOPs).
    private func analyticCost(_ m: ResNetWithExits, exit: Int, h: Int, w: Int) -> ComputeCost {
        let b = m.backbone
        var macs = 0, ref = 0
        func conv(_ c: Conv2DConfig, _ hh: Int, _ ww: Int) { macs += c.macs(h: hh, w: ww); ref += c.macs(h: hh, w: ww) }
        conv(b.conv1.config, h, w)
        ref += b.conv1.config.outChannels * h * w
        var (hh, ww) = (h, w), k = 0
        for (s, stage) in b.stages.enumerated() {
            for block in stage {
                let o = block.conv1.config.outputSize(h: hh, w: ww)
                conv(block.conv1.config, hh, ww)
                conv(block.conv2.config, o.h, o.w)
                if let p = block.shortcut.layers.first as? Conv2d { conv(p.config, hh, ww) }
                (hh, ww) = (o.h, o.w)
                ref += 2 * block.conv2.config.outChannels * hh * ww
            }
            let head: Linear
            if s == b.stages.count - 1 { head = b.linear } else if k < m.exitStages.count && m.exitStages[k] == s { head = m.heads[k] } else {
                continue
            }
            ref += head.weight.shape[1] * hh * ww + head.weight.value.count + head.bias!.value.count
            macs += head.weight.value.count
            if k == exit { break }
            k += 1
        }
        return ComputeCost(macs: macs, referenceFLOPs: ref)
    }

    func testDeploymentEqualsAnalysisAtEachSamplesExit() throws {
        let m = model()
        var rng = SeededRNG(seed: 3)
        for n in [1, 5, 9, 40] {   // 40: micro-batches on the workers, each deciding alone
            let x = Tensor.normal([n, 3, 16, 16], rng: &rng)
            let analysis = try m.analyze(x)
            XCTAssertEqual(analysis.outputs.count, 3)
            // Thresholds at the median confidence of exits 0 and 1: some samples leave at each.
            let c0 = ExitPolicy.confidence(analysis.outputs[0]).sorted(), c1 = ExitPolicy.confidence(analysis.outputs[1]).sorted()
            let policies: [ExitPolicy] = [.thresholds([c0[n / 2], c1[n / 2]]), .thresholds([0, 0]), .thresholds([.infinity, .infinity]),
                                          .thresholds([.infinity, 0]), .exit(1), .last]
            for policy in policies {
                var first: AdaptiveOutput<ExitDecision>?
                for threads in [1, 2, 3] {
                    let out = try m.infer(x, policy: policy, engine: Engine(threads: threads))
                    let tag = "n=\(n) \(policy) threads=\(threads)"
                    for s in 0..<n {
                        let k = out.decisions[s].exit
                        assertClose(out.logits.batch(s), analysis.outputs[k].batch(s), tol: 1e-5, "\(tag) sample \(s) at exit \(k)")
                        XCTAssertEqual(out.costs[s], analyticCost(m, exit: k, h: 16, w: 16), "\(tag) cost of sample \(s) at exit \(k)")
                        let conf = ExitPolicy.confidence(analysis.outputs[k].batch(s))[0]
                        XCTAssertEqual(out.decisions[s].confidence, conf, accuracy: 1e-5, tag)
                        // It left at the first exit that accepted it.
                        if case .thresholds(let t) = policy {
                            for j in 0..<k { XCTAssertLessThan(ExitPolicy.confidence(analysis.outputs[j].batch(s))[0], t[j], tag) }
                            if k < 2 { XCTAssertGreaterThanOrEqual(conf, t[k], tag) }
                        }
                    }
                    if let first {
                        XCTAssertEqual(out.logits.scalars, first.logits.scalars, "\(tag): depends on the thread count")
                        XCTAssertEqual(out.decisions, first.decisions, tag)
                    }
                    first = out
                }
            }
            XCTAssertEqual(try m.infer(x, policy: .thresholds([0, 0])).decisions.map(\.exit), Array(repeating: 0, count: n),
                           "threshold 0 exits everything at the first exit")
            XCTAssertEqual(try m.infer(x, policy: .thresholds([.infinity, .infinity])).decisions.map(\.exit),
                           Array(repeating: 2, count: n), "an infinite threshold runs everything to the last exit")
            XCTAssertEqual(analysis.costs, Array(repeating: m.fullCost(height: 16, width: 16), count: n))
        }
    }

    func testFullCostIsTheLastExitsCost() {
        let m = model()
        XCTAssertEqual(m.fullCost(height: 32, width: 32), analyticCost(m, exit: 2, h: 32, w: 32))
        XCTAssertGreaterThan(analyticCost(m, exit: 2, h: 32, w: 32).macs, analyticCost(m, exit: 0, h: 32, w: 32).macs)
    }

    func testBadPoliciesAndInputsAreTypedErrors() {
        let m = model()
        let x = Tensor(zeros: [2, 3, 8, 8])
        func policyError(_ p: ExitPolicy) -> PolicyError? {
            do { _ = try m.infer(x, policy: p); return nil } catch { return error as? PolicyError }
        }
        XCTAssertEqual(policyError(.thresholds([0.5, .nan])), .notANumber(what: "exit thresholds", index: 1))
        XCTAssertEqual(policyError(.thresholds([0.5])), .wrongCount(what: "exit thresholds", expected: 2, found: 1))
        XCTAssertEqual(policyError(.thresholds([0.5, 0.5, 0.5])), .wrongCount(what: "exit thresholds", expected: 2, found: 3))
        XCTAssertEqual(policyError(.exit(3)), .outOfRange(what: "exit", index: 0, value: 3, range: "0...2"))
        XCTAssertNil(policyError(.exit(2)))
        XCTAssertThrowsError(try m.infer(Tensor(zeros: [2, 1, 8, 8]), policy: .last)) { error in
            XCTAssertEqual(error as? InputError, .shapeMismatch(context: "ResNetWithExits", expected: "[N, 3, H, W]", found: [2, 1, 8, 8]))
        }
        XCTAssertThrowsError(try m.analyze(Tensor(zeros: [3, 8, 8])))
    }

    func testKeysExtendTheBackbones() throws {
        let m = ResNetWithExits.depth(20)
        let keys = m.namedParameters().map(\.0)
        XCTAssertEqual(Array(keys.suffix(4)), ["exits.0.weight", "exits.0.bias", "exits.1.weight", "exits.1.bias"])
        XCTAssertEqual(m.heads[0].weight.shape, [10, 16])
        XCTAssertEqual(m.heads[1].weight.shape, [10, 32])
        let backbone = CIFARResNet.depth(20, seed: 9)
        let report = try m.loadStateDict(backbone.stateDict(), strict: false)
        XCTAssertEqual(report.missing, ["exits.0.weight", "exits.0.bias", "exits.1.weight", "exits.1.bias"])
    }

    /// Dense networks conform trivially: the deployment forward is the forward.
    func testDenseNetworksConform() throws {
        let r = CIFARResNet.depth(8).eval()
        var rng = SeededRNG(seed: 8)
        let x = Tensor.normal([3, 3, 16, 16], rng: &rng)
        let out = try r.infer(x, policy: DensePolicy())
        XCTAssertEqual(out.logits.scalars, try r.analyze(x).outputs[0].scalars)
        XCTAssertEqual(out.costs, Array(repeating: r.fullCost(height: 16, width: 16), count: 3))
        XCTAssertEqual(out.decisions, Array(repeating: DenseDecision(), count: 3))
    }
}
