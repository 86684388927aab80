import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicNN
import TestSupport
import XCTest

/// Directory of the committed fixtures (scripts/make_fixtures.py, scripts/make_imagenet_fixtures.py).
let fixturesURL: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

func loadFixture(_ relativePath: String) throws -> SafeTensorsFile {
    try SafeTensors.read(contentsOf: fixturesURL.appendingPathComponent(relativePath))
}

/// The backbones against PyTorch: ResNet-20 from a state_dict PyTorch saved, ResNet-20/18 and
/// torchvision's ResNet-18/50 with weights from the hash rule (nothing large is stored).
final class ResNetFixtureTests: XCTestCase {
    func testResNet20LoadsPyTorchStateDictAndMatchesLogits() throws {
        let state = try loadFixture("models/resnet20_state.safetensors")
        let io = try loadFixture("models/resnet20_io.safetensors")
        let model = CIFARResNet.depth(20)
        // Every PyTorch key is either one of ours or an integer num_batches_tracked counter.
        XCTAssertEqual(Set(state.tensors.keys), Set(model.stateDict().keys))
        XCTAssertTrue(state.integerEntries.keys.allSatisfy { $0.hasSuffix("num_batches_tracked") })
        XCTAssertEqual(state.integerEntries.count, 21)
        let report = try model.loadStateDict(state.tensors)
        XCTAssertEqual(report.loaded.count, model.namedParameters().count)
        XCTAssertEqual(model.parameterCount, 272_474)
        model.eval()
        let e = assertClose(model(io.tensors["x"]!), io.tensors["logits"]!, tol: 1e-4, "resnet20")
        // The unfused path (BN as its own op) agrees too.
        let unfused = assertClose(Self.unfusedForward(model, io.tensors["x"]!), io.tensors["logits"]!, tol: 1e-4)
        print(String(format: "resnet20 fixture: fused max rel error %.2e, unfused %.2e", e, unfused))
    }

    func testResNet20And18HashWeightsMatchPyTorch() throws {
        for (model, file) in [(CIFARResNet.depth(20), "models/resnet20_hash_io.safetensors"),
                              (CIFARResNet.resnet18(), "models/resnet18_io.safetensors")] {
            let io = try loadFixture(file)
            hashWeights(model)
            model.eval()
            for threads in [1, 2] {
                model.setThreads(threads)
                let e = assertClose(model(io.tensors["x"]!), io.tensors["logits"]!, tol: 1e-4, "\(model.name) threads=\(threads)")
                print(String(format: "%@ fixture (hash weights, %d threads): max rel error %.2e", model.name, threads, e))
            }
        }
    }

    /// Eval-mode forward with batch norm as a separate op (no folding), to check the folding.
    static func unfusedForward(_ m: CIFARResNet, _ x: Tensor) -> Tensor {
        var h = Ops.relu(m.bn1(m.conv1(x)))
        for stage in m.stages {
            for b in stage {
                let out = b.bn2(b.conv2(Ops.relu(b.bn1(b.conv1(h)))))
                h = Ops.add(out, b.shortcut.isEmpty ? h : b.shortcut(h), activation: .relu)
            }
        }
        return m.linear(Ops.globalAvgPool(h))
    }

    /// torchvision's ResNet-18 and ResNet-50 (twins in scripts/make_imagenet_fixtures.py): the
    /// same state_dict keys, and eval-mode logits at 224×224 within 1e-4 of PyTorch's (float64),
    /// with weights and input from the hash rule (nothing large is stored).
    func testImageNetResNetsMatchTorchvisionTwins() throws {
        let x = Tensor.hashUniform([2, 3, 224, 224], seed: Tensor.fnv1a64("imagenet-input"), low: -1, high: 1)
        for (model, file) in [(ImageNetResNet.resnet18(), "models/resnet18_imagenet_hash_io.safetensors"),
                              (ImageNetResNet.resnet50(), "models/resnet50_imagenet_hash_io.safetensors")] {
            let io = try loadFixture(file)
            let keys = try JSONDecoder().decode([String].self, from: Data(io.metadata["keys"]!.utf8))
            XCTAssertEqual(model.namedParameters().map(\.0), keys, "\(model.name) state_dict keys")
            hashWeights(model)
            model.eval()
            for threads in [1, 2] {
                model.threads = threads
                let e = assertClose(model(x), io.tensors["logits"]!, tol: 1e-4, "\(model.name) threads=\(threads)")
                print(String(format: "%@ fixture (hash weights, %d threads): max rel error %.2e", model.name, threads, e))
            }
        }
    }
}
