import DynamicCore
import DynamicNN
import EarlyExit
import Foundation
import TestSupport
import XCTest

/// RANet against the authors' PyTorch code (yangle15/RANet-pytorch): the same state_dict keys in
/// the same order, every exit's eval-mode logits within 1e-4, the engine's executed cost at every
/// exit equal to the authors' op counter and to DESIGN §5's table.
final class RANetTests: XCTestCase {
    func testEveryExitMatchesTheAuthorsCode() throws {
        for (preset, file) in [("cifar-readme", "ranet_cifar_readme"), ("cifar-script", "ranet_cifar_script")] {
            let io = try earlyExitFixture(file)
            let model = try RANet(XCTUnwrap(RANetConfig.preset(preset)))
            XCTAssertEqual(model.namedParameters().map(\.0), try metadataList(io, "keys", as: [String].self), "\(preset) keys")
            hashWeights(model)
            model.eval()
            let x = try XCTUnwrap(io.tensors["input"])
            for threads in [1, 2] {
                let outputs = try model.analyze(x, engine: Engine(threads: threads)).outputs
                XCTAssertEqual(outputs.count, model.exitCount)
                for (k, y) in outputs.enumerated() {
                    let e = assertClose(y, try XCTUnwrap(io.tensors["exit\(k)"]), tol: 1e-4, "\(preset) exit \(k) threads \(threads)")
                    if threads == 2 { print(String(format: "RANet %@ exit %d: max rel error %.2e", preset, k, e)) }
                }
            }
            XCTAssertEqual(model.exitParameterCounts, try metadataList(io, "params", as: [Int].self), "\(preset) parameters per exit")
            let reference = try metadataList(io, "mflops", as: [Double].self)
            for k in 0..<model.exitCount {
                let cost = try model.infer(x, policy: .exit(k)).costs
                XCTAssertEqual(cost[0], cost[1])
                XCTAssertEqual(Double(cost[0].referenceFLOPs) / 1e6, reference[k], accuracy: 1e-6, "\(preset) exit \(k) MFLOPs")
            }
        }
    }

    func testFLOPTableMatchesDesign() throws {
        let model = try RANet(XCTUnwrap(RANetConfig.preset("cifar-readme"))).eval()
        let x = Tensor(zeros: [1, 3, 32, 32])
        for (k, want) in [8.36, 21.77, 32.84, 41.52, 53.23, 58.92].enumerated() {
            let got = Double(try model.infer(x, policy: .exit(k)).costs[0].referenceFLOPs) / 1e6
            XCTAssertEqual(got, want, accuracy: want * 1e-3, "exit \(k)")
        }
        XCTAssertEqual(model.parameterCount, 2_547_601)
        XCTAssertEqual(try RANet(XCTUnwrap(RANetConfig.preset("cifar-script"))).parameterCount, 3_261_830)
    }

    /// Samples leave at every exit of every flow; those going on carry the coarser flows' maps.
    func testDeploymentStopsEachSampleAtItsExit() throws {
        let model = try RANet(XCTUnwrap(RANetConfig.preset("cifar-readme")), seed: 5)
        hashWeights(model)
        model.eval()
        var rng = SeededRNG(seed: 6)
        let x = Tensor.normal([7, 3, 32, 32], rng: &rng)
        let analysis = try model.analyze(x)
        let exits = model.exitCount
        let exitCost = try (0..<exits).map { try model.infer(x.batch(0..<1), policy: .exit($0)).costs[0] }
        // Thresholds that let about one sample in seven leave at each exit.
        let thresholds = (0..<(exits - 1)).map { ExitPolicy.confidence(analysis.outputs[$0]).sorted()[5] }
        for policy in [ExitPolicy.thresholds(thresholds), .thresholds(Array(repeating: 0, count: exits - 1)), .last, .exit(2)] {
            for threads in [1, 2] {
                let out = try model.infer(x, policy: policy, engine: Engine(threads: threads))
                for s in 0..<7 {
                    let k = out.decisions[s].exit
                    assertClose(out.logits.batch(s), analysis.outputs[k].batch(s), tol: 1e-5, "\(policy) sample \(s) exit \(k)")
                    XCTAssertEqual(out.costs[s], exitCost[k], "\(policy) sample \(s)")
                }
            }
        }
        let spread = try model.infer(x, policy: .thresholds(thresholds)).decisions.map(\.exit)
        XCTAssertGreaterThan(Set(spread).count, 2, "samples left at several exits: \(spread)")
        XCTAssertThrowsError(try model.infer(x, policy: .thresholds([0.5])))
        var bad = try XCTUnwrap(RANetConfig.preset("cifar-readme"))
        bad.scaleList = [1, 3, 4]
        XCTAssertThrowsError(try RANet(bad)) { XCTAssertTrue($0 is ConfigurationError) }
    }
}
