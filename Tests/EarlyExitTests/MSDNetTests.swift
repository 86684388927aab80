import DynamicCore
import DynamicNN
import EarlyExit
import Foundation
import TestSupport
import XCTest

/// Committed fixtures of scripts/make_early_exit_fixtures.py (made by the authors' code).
func earlyExitFixture(_ name: String) throws -> SafeTensorsFile {
    let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!
    return try SafeTensors.read(contentsOf: dir.appendingPathComponent("\(name)_hash_io.safetensors"))
}

func metadataList<T: Decodable>(_ file: SafeTensorsFile, _ key: String, as: T.Type) throws -> T {
    try JSONDecoder().decode(T.self, from: Data(try XCTUnwrap(file.metadata[key]).utf8))
}

/// MSDNet against the authors' PyTorch code (kalviny/MSDNet-PyTorch): the same state_dict keys
/// in the same order, every exit's eval-mode logits within 1e-4, the engine's executed cost at
/// every exit equal to the authors' op counter, and the paper's CIFAR-100 FLOP tables.
final class MSDNetTests: XCTestCase {
    func testEveryExitMatchesTheAuthorsCode() throws {
        for (preset, file) in [("cifar-budgeted", "msdnet_cifar_budgeted"), ("cifar-anytime", "msdnet_cifar_anytime")] {
            let io = try earlyExitFixture(file)
            let model = try MSDNet(XCTUnwrap(MSDNetConfig.preset(preset)))
            XCTAssertEqual(model.namedParameters().map(\.0), try metadataList(io, "keys", as: [String].self), "\(preset) keys")
            hashWeights(model)
            model.eval()
            let x = try XCTUnwrap(io.tensors["input"])
            for threads in [1, 2] {
                let outputs = try model.analyze(x, engine: Engine(threads: threads)).outputs
                XCTAssertEqual(outputs.count, model.exitCount)
                for (k, y) in outputs.enumerated() {
                    let e = assertClose(y, try XCTUnwrap(io.tensors["exit\(k)"]), tol: 1e-4, "\(preset) exit \(k) threads \(threads)")
                    if threads == 2 { print(String(format: "MSDNet %@ exit %d: max rel error %.2e", preset, k, e)) }
                }
            }
            // Cumulative reference MFLOPs at every exit, counted by the engine from what ran.
            XCTAssertEqual(model.exitParameterCounts, try metadataList(io, "params", as: [Int].self), "\(preset) parameters per exit")
            let reference = try metadataList(io, "mflops", as: [Double].self)
            for k in 0..<model.exitCount {
                let cost = try model.infer(x, policy: .exit(k)).costs
                XCTAssertEqual(cost[0], cost[1])
                XCTAssertEqual(Double(cost[0].referenceFLOPs) / 1e6, reference[k], accuracy: 1e-6, "\(preset) exit \(k) MFLOPs")
            }
        }
    }

    /// The paper's figures (DESIGN §5) are for CIFAR-100 (100 classes): each exit's linear layer
    /// adds 12 900 FLOPs where CIFAR-10's adds 1 290.
    func testFLOPTablesMatchThePaper() throws {
        let tables: [(String, [Double])] = [("cifar-budgeted", [6.86, 14.35, 27.54, 41.71, 58.48]),
                                            ("cifar-anytime", [15.14, 25.51, 37.10, 46.33, 57.34, 66.96, 75.94])]
        for (preset, mflops) in tables {
            let model = try MSDNet(XCTUnwrap(MSDNetConfig.preset(preset, classes: 100))).eval()
            let x = Tensor(zeros: [1, 3, 32, 32])
            for (k, want) in mflops.enumerated() {
                let got = Double(try model.infer(x, policy: .exit(k)).costs[0].referenceFLOPs) / 1e6
                XCTAssertEqual(got, want, accuracy: want * 1e-3, "\(preset) exit \(k)")
            }
        }
    }

    /// The deployment forward's logits are the analysis forward's at each sample's exit; its
    /// policies' edge cases; its cost is the exit's.
    func testDeploymentStopsEachSampleAtItsExit() throws {
        let model = try MSDNet(XCTUnwrap(MSDNetConfig.preset("cifar-budgeted")), seed: 3)
        hashWeights(model)
        model.eval()
        var rng = SeededRNG(seed: 4)
        let x = Tensor.normal([5, 3, 32, 32], rng: &rng)
        let analysis = try model.analyze(x)
        let exitCost = try (0..<model.exitCount).map { try model.infer(x.batch(0..<1), policy: .exit($0)).costs[0] }
        let conf = analysis.outputs.map { ExitPolicy.confidence($0).sorted() }
        let thresholds = (0..<(model.exitCount - 1)).map { conf[$0][3] }
        for policy in [ExitPolicy.thresholds(thresholds), .thresholds([0, 0, 0, 0]), .thresholds(Array(repeating: .infinity, count: 4)), .last] {
            let out = try model.infer(x, policy: policy, engine: Engine(threads: 2))
            for s in 0..<5 {
                let k = out.decisions[s].exit
                assertClose(out.logits.batch(s), analysis.outputs[k].batch(s), tol: 1e-5, "\(policy) sample \(s) exit \(k)")
                XCTAssertEqual(out.costs[s], exitCost[k], "\(policy) sample \(s)")
            }
        }
        XCTAssertEqual(try model.infer(x, policy: .thresholds([0, 0, 0, 0])).decisions.map(\.exit), [0, 0, 0, 0, 0])
        XCTAssertEqual(try model.infer(x, policy: .thresholds(Array(repeating: .infinity, count: 4))).decisions.map(\.exit),
                       [4, 4, 4, 4, 4])
        XCTAssertThrowsError(try model.infer(x, policy: .thresholds([0.5, 0.5, .nan, 0.5])))
    }

    func testPresetsAndBadConfigurations() throws {
        XCTAssertEqual(MSDNetConfig.preset("cifar-budgeted")?.steps, [1, 2, 3, 4, 5])
        XCTAssertEqual(MSDNetConfig.preset("cifar-anytime")?.steps, [4, 2, 2, 2, 2, 2, 2])
        XCTAssertNil(MSDNetConfig.preset("cifar-huge"))
        var bad = try XCTUnwrap(MSDNetConfig.preset("cifar-anytime"))
        bad.bnFactor = [1, 2]
        XCTAssertThrowsError(try MSDNet(bad)) { XCTAssertTrue($0 is ConfigurationError) }
        XCTAssertEqual(try MSDNet(XCTUnwrap(MSDNetConfig.preset("cifar-budgeted"))).parameterCount, 2_020_874)
        XCTAssertEqual(try MSDNet(XCTUnwrap(MSDNetConfig.preset("cifar-anytime"))).parameterCount, 2_986_690)
    }
}
