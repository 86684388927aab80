import DynamicCore
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

/// How far apart two correct Float computations of one ResNet-20 training step are: the layer
/// path against itself with every input value moved by one ulp, and the engine against itself
/// on the kernels of the other vector width (other summation orders, and Winograd only at 16
/// lanes) — next to the engine against the layer path. The engine's differences from
/// the layer path must be of the size that rounding alone produces.
final class RoundingSensitivityTests: XCTestCase {
    func testEngineDiffersFromLayerPathOnlyByRounding() throws {
        var rng = SeededRNG(seed: 83)
        let x = Tensor.normal([2, 3, 32, 32], rng: &rng)
        let nudged = x.map { $0.nextUp }
        let engine = CIFARResNet.depth(20, seed: 4), layered = CIFARResNet.depth(20, seed: 4)
        for (_, p) in engine.namedParameters() where p.isTrainable && p.value.rank == 1 {
            p.value = Tensor.uniform(p.value.shape, low: 0.5, high: 1.5, rng: &rng)
        }
        try layered.loadStateDict(engine.stateDict())
        layered.usesEngine = false
        func gradients(_ m: CIFARResNet, _ input: Tensor) -> [String: Tensor] {
            m.train()
            m.zeroGrad()
            let logits = m(input)
            _ = m.backward(Loss.crossEntropy(logits: logits, labels: [0, 1]).gradient)
            return Dictionary(uniqueKeysWithValues: m.namedParameters().compactMap { k, p in p.grad.map { (k, $0) } })
        }
        let state = layered.stateDict()
        let reference = gradients(layered, x)
        try layered.loadStateDict(state)
        let nudgedGrads = gradients(layered, nudged)
        // One training-mode step on an engine with the given kernels.
        func engineGradients(_ kernels: KernelOptions) throws -> [String: Tensor] {
            let state = engine.stateDict()
            defer { _ = try? engine.loadStateDict(state) }
            engine.train()
            engine.zeroGrad()
            let e = Engine(kernels: kernels)
            e.begin(batch: 2, recording: true)
            let logits = engine.outputs(e.input(x)).last!
            e.backward(logits, gradient: Loss.crossEntropy(logits: logits.value, labels: [0, 1]).gradient)
            return Dictionary(uniqueKeysWithValues: engine.namedParameters().compactMap { k, p in p.grad.map { (k, $0) } })
        }
        let engineGrads = try engineGradients(.fastest)
        let directGrads = try engineGradients(KernelOptions(width: KernelWidth.fastest == .simd16 ? .simd8 : .simd16))
        var nudge: Float = 0, algorithm: Float = 0, engineError: Float = 0
        for (key, g) in reference {
            nudge = max(nudge, nudgedGrads[key]!.maxRelativeError(g))
            algorithm = max(algorithm, directGrads[key]!.maxRelativeError(engineGrads[key]!))
            engineError = max(engineError, engineGrads[key]!.maxRelativeError(g))
        }
        print(String(format: "ResNet-20 step, parameter gradients (max over tensors of max |a − b| / max |b|): layer path "
                     + "vs itself on inputs one ulp apart %.2e; engine on 16- vs 8-lane kernels %.2e; engine vs "
                     + "layer path %.2e", nudge, algorithm, engineError))
        XCTAssertLessThanOrEqual(engineError, 2 * max(nudge, algorithm), "the engine differs by more than rounding explains")
    }
}
