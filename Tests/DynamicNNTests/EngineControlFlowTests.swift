import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import TestSupport
import XCTest

/// A small network whose forward depends on the data, as gated and early-exit networks do: a
/// per-sample gate from pooled features (FC → ReLU-1) runs a residual block only for the samples
/// whose gate is open (a compact sub-batch, scaled by the gate and added back), then DenseNet-style
/// concatenations of 6-channel growth, a bilinear down- and up-sampling branch, and two heads.
private final class GatedToyNet: Module {
    let stem: ConvBNUnit, gate: Linear, unit1: ConvBNUnit, unit2: ConvBNUnit
    let grow1: ConvBNUnit, grow2: ConvBNUnit, branch: ConvBNUnit, head1: Linear, head2: Linear
    private let modules: [(String, Module)]

    init(seed: UInt64) {
        var rng = SeededRNG(seed: seed)
        var named: [(String, Module)] = []
        func unit(_ name: String, _ cin: Int, _ cout: Int, _ act: Activation) -> ConvBNUnit {
            let conv = Conv2d(cin, cout, kernelSize: 3, padding: 1, bias: false, rng: &rng), bn = BatchNorm2d(cout)
            bn.weight.value = Tensor.uniform([cout], low: 0.5, high: 1.5, rng: &rng)
            bn.bias.value = Tensor.normal([cout], std: 0.3, rng: &rng)
            named += [(name + "_conv", conv), (name + "_bn", bn)]
            return ConvBNUnit(conv: conv, bn: bn, activation: act)
        }
        stem = unit("stem", 3, 8, .relu)
        unit1 = unit("unit1", 8, 8, .relu)
        unit2 = unit("unit2", 8, 8, .identity)
        grow1 = unit("grow1", 8, 6, .relu)
        grow2 = unit("grow2", 14, 6, .relu)
        branch = unit("branch", 20, 12, .relu)
        gate = Linear(8, 1, rng: &rng)
        head1 = Linear(14, 4, rng: &rng)
        head2 = Linear(32, 4, rng: &rng)
        modules = named + [("gate", gate), ("head1", head1), ("head2", head2)]
        super.init()
    }

    override var children: [(String, Module)] { modules }

    /// Sets the gate so that its pre-activations on x are ±0.3…0.6 (half the samples open, in
    /// (0.3, 0.6), half closed): decisions away from the kinks, so that both paths take the same
    /// ones (the test checks they stay away over its steps).
    /// Solves pooled·w = targets (6 samples, 8 features) by the minimum-norm solution.
    func placeGate(for x: Tensor) {
        let p = Ops.globalAvgPool(Ops.activation(stem(x), .relu)).scalars.map(Double.init)
        let (n, k) = (x.shape[0], 8)
        let targets: [Double] = (0..<n).map { i in
            let magnitude = 0.3 + 0.3 * Double(i) / Double(n)
            return i % 2 == 0 ? magnitude : -magnitude
        }
        // (P Pᵀ) a = t, w = Pᵀ a, by Gaussian elimination.
        var m = [[Double]](repeating: [Double](repeating: 0, count: n + 1), count: n)
        for i in 0..<n {
            for j in 0..<n { for f in 0..<k { m[i][j] += p[i * k + f] * p[j * k + f] } }
            m[i][n] = targets[i]
        }
        for c in 0..<n {
            let pivot = (c..<n).max { abs(m[$0][c]) < abs(m[$1][c]) }!
            m.swapAt(c, pivot)
            for r in 0..<n where r != c {
                let f = m[r][c] / m[c][c]
                for j in c...n { m[r][j] -= f * m[c][j] }
            }
        }
        let a = (0..<n).map { m[$0][n] / m[$0][$0] }
        var w = [Float](repeating: 0, count: k)
        for j in 0..<k { for i in 0..<n { w[j] += Float(a[i] * p[i * k + j]) } }
        gate.weight.value = Tensor(shape: [1, k], scalars: w)
        gate.bias!.value = Tensor(shape: [1], scalars: [0])
    }

    /// The engine forward: logits of both heads, the gate [N, 1], the rows that ran the block.
    func forward(_ x: FeatureMap) -> (Variable, Variable, Variable, [Int]) {
        let h0 = stem(x)
        let g = gate(h0.globalAveragePooled()).activated(.relu1)
        let rows = g.value.scalars.indices.filter { g.value.scalars[$0] > 0 }
        var h1 = h0
        if !rows.isEmpty {
            let branchOut = unit2(unit1(h0.gathering(rows: rows)))
            h1 = h0.adding(branchOut.scaled(by: g.gathering(rows: rows)), atRows: rows)
        }
        let cat1 = FeatureMap.concat([h1, grow1(h1)])
        let cat2 = FeatureMap.concat([cat1, grow2(cat1)])
        let up = branch(cat2.resized(height: 4, width: 4)).resized(height: 8, width: 8)
        let cat3 = FeatureMap.concat([cat2, up])
        return (head1(cat1.globalAveragePooled()), head2(cat3.globalAveragePooled()), g, rows)
    }

    /// The same network on the layer path (NCHW tensors), `masked`: the block computed for every
    /// sample and multiplied by its gate (closed gates multiply by 0).
    struct LayerForward {
        var logits1: Tensor, logits2: Tensor, gate: Tensor, rows: [Int]
        var h0: Tensor, preGate: Tensor, blockOut: Tensor?, cat1: Tensor, cat3: Tensor
    }

    func layerForward(_ x: Tensor, masked: Bool = false) -> LayerForward {
        let h0 = stem(x)
        let pre = gate(Ops.globalAvgPool(h0))
        let g = Ops.activation(pre, .relu1)
        let rows = g.scalars.indices.filter { g.scalars[$0] > 0 }
        let sampleRows = masked ? Array(0..<x.shape[0]) : rows
        var h1 = h0
        var blockOut: Tensor?
        if !sampleRows.isEmpty {
            let b = unit2(unit1(Tensor.concatBatch(sampleRows.map { h0.batch($0) })))
            blockOut = b
            var out = h0
            for (k, r) in sampleRows.enumerated() {
                let scaled = b.batch(k).scaled(by: g.scalars[r])
                out = Self.replacingImage(out, r, with: out.batch(r) + scaled)
            }
            h1 = out
        }
        let cat1 = Ops.concatChannels([h1, grow1(h1)])
        let cat2 = Ops.concatChannels([cat1, grow2(cat1)])
        let up = Ops.resizeBilinearAlignCorners(branch(Ops.resizeBilinearAlignCorners(cat2, height: 4, width: 4)), height: 8, width: 8)
        let cat3 = Ops.concatChannels([cat2, up])
        return LayerForward(logits1: head1(Ops.globalAvgPool(cat1)), logits2: head2(Ops.globalAvgPool(cat3)), gate: g,
                            rows: rows, h0: h0, preGate: pre, blockOut: blockOut, cat1: cat1, cat3: cat3)
    }

    /// Backward of `layerForward` (unmasked), by hand: dL/dlogits of both heads and dL/dgate.
    func layerBackward(_ f: LayerForward, _ d1: Tensor, _ d2: Tensor, _ dGate: Tensor) {
        let n = f.h0.shape[0]
        let dCat3 = Ops.globalAvgPoolBackward(head2.backward(d2), inputShape: f.cat3.shape)
        let split3 = Ops.concatChannelsBackward(dCat3, channels: [20, 12])
        let dDown = branch.backward(Ops.resizeBilinearAlignCornersBackward(split3[1], inputHeight: 4, inputWidth: 4))
        let dCat2 = split3[0] + Ops.resizeBilinearAlignCornersBackward(dDown, inputHeight: 8, inputWidth: 8)
        let split2 = Ops.concatChannelsBackward(dCat2, channels: [14, 6])
        let dCat1 = split2[0] + grow2.backward(split2[1]) + Ops.globalAvgPoolBackward(head1.backward(d1), inputShape: f.cat1.shape)
        let split1 = Ops.concatChannelsBackward(dCat1, channels: [8, 6])
        var dH0 = split1[0] + grow1.backward(split1[1])
        var dG = dGate
        if let b = f.blockOut {
            let dScaled = Tensor.concatBatch(f.rows.map { dH0.batch($0) })
            var dB: [Tensor] = []
            for (k, r) in f.rows.enumerated() {
                dB.append(dScaled.batch(k).scaled(by: f.gate.scalars[r]))
                let dot = zip(dScaled.batch(k).scalars, b.batch(k).scalars).reduce(0) { $0 + $1.0 * $1.1 }
                dG = Self.replacingImage(dG, r, with: Tensor(shape: [1, 1], scalars: [dG.scalars[r] + dot]))
            }
            let dX = unit1.backward(unit2.backward(Tensor.concatBatch(dB)))
            for (k, r) in f.rows.enumerated() { dH0 = Self.replacingImage(dH0, r, with: dH0.batch(r) + dX.batch(k)) }
        }
        let dPre = Ops.activationBackward(dG, input: f.preGate, .relu1)
        dH0 += Ops.globalAvgPoolBackward(gate.backward(dPre), inputShape: f.h0.shape)
        _ = stem.backward(dH0)
        _ = n
    }

    static func replacingImage(_ t: Tensor, _ i: Int, with image: Tensor) -> Tensor {
        Tensor.concatBatch((0..<t.shape[0]).map { $0 == i ? image : t.batch($0) })
    }
}

final class EngineControlFlowTests: XCTestCase {
    private let labels = [0, 3, 1, 2, 3, 0]

    /// L = CE(head 1) + ½·CE(head 2) + 0.01·Σ|gate|: values and gradients.
    private func objectiveParts(_ l1: Tensor, _ l2: Tensor, _ g: Tensor) -> (Float, Tensor, Tensor, Tensor) {
        let c1 = Loss.crossEntropy(logits: l1, labels: labels), c2 = Loss.crossEntropy(logits: l2, labels: labels)
        let pen = Loss.l1(g, weight: 0.01)
        return (c1.value + 0.5 * c2.value + pen.value, c1.gradient, c2.gradient.scaled(by: 0.5), pen.gradient)
    }

    /// Three SGD steps on the engine and on the layer path from identical weights: outputs, every
    /// gradient and the running statistics agree step by step; the gated block's batch statistics
    /// come from the samples that ran it on both. Independent of the thread count.
    func testGatedNetworkTrainsLikeTheLayerPath() throws {
        var rng = SeededRNG(seed: 21)
        let x = Tensor.normal([6, 3, 8, 8], rng: &rng)
        var finalStates: [[String: [Float]]] = []
        for threads in [1, 2, 3] {
            let engineNet = GatedToyNet(seed: 5), layerNet = GatedToyNet(seed: 5)
            engineNet.placeGate(for: x)
            try layerNet.loadStateDict(engineNet.stateDict())
            let optimizers = [engineNet, layerNet].map {
                SGD(groups: [ParameterGroup($0.trainableParameters, learningRate: 0.05)], momentum: 0.9)
            }
            let e = Engine(threads: threads)
            for step in 0..<3 {
                engineNet.train(); layerNet.train()
                engineNet.zeroGrad(); layerNet.zeroGrad()
                e.begin(batch: 6, recording: true)
                let (l1, l2, gate, rows) = engineNet.forward(e.input(x))
                let f = layerNet.layerForward(x)
                XCTAssertEqual(rows, f.rows, "step \(step): same samples run the block")
                XCTAssertTrue(!rows.isEmpty && rows.count < 6, "step \(step): the gate must split the batch, got \(rows)")
                XCTAssertTrue(f.preGate.scalars.allSatisfy { abs($0) > 0.02 && abs($0 - 1) > 0.02 },
                              "gate pre-activations near a kink: \(f.preGate.scalars), step \(step)")
                assertClose(l1.value, f.logits1, tol: 1e-5, "step \(step) head 1")
                assertClose(l2.value, f.logits2, tol: 1e-5, "step \(step) head 2")
                var objective = Objective()
                let (value, d1, d2, dGate) = objectiveParts(l1.value, l2.value, gate.value)
                objective.add(l1, Loss.crossEntropy(logits: l1.value, labels: labels))
                objective.add(l2, Loss.crossEntropy(logits: l2.value, labels: labels), weight: 0.5)
                objective.add(gate, Loss.l1(gate.value, weight: 0.01))
                XCTAssertEqual(objective.value, value, accuracy: 1e-5)
                e.backward(objective)
                layerNet.layerBackward(f, d1, d2, dGate)
                let other = Dictionary(uniqueKeysWithValues: layerNet.namedParameters())
                for (key, p) in engineNet.namedParameters() {
                    if p.isTrainable {
                        assertClose(p.grad!, other[key]!.grad!, tol: 1e-4, "step \(step) \(key) gradient, \(threads) threads")
                    } else {
                        assertClose(p.value, other[key]!.value, tol: 1e-5, "step \(step) \(key), \(threads) threads")
                    }
                }
                optimizers.forEach { $0.step() }
            }
            finalStates.append(engineNet.stateDict().mapValues(\.scalars))
        }
        XCTAssertEqual(finalStates[0], finalStates[1], "engine results depend on the thread count")
        XCTAssertEqual(finalStates[0], finalStates[2], "engine results depend on the thread count")
    }

    /// Eval mode: skipping the block for closed gates gives the masked computation's outputs, and
    /// the executed cost charges the block only to the samples that ran it.
    func testGatedNetworkSkipsWorkInEvalMode() {
        var rng = SeededRNG(seed: 22)
        let x = Tensor.normal([6, 3, 8, 8], rng: &rng)
        let net = GatedToyNet(seed: 6)
        net.placeGate(for: x)
        net.train()
        for _ in 0..<2 { _ = net.layerForward(x) }     // running statistics off their initial values
        net.eval()
        let e = Engine(threads: 2)
        e.begin(batch: 6, recording: false)
        let (l1, l2, gate, rows) = net.forward(e.input(x))
        let masked = net.layerForward(x, masked: true)
        XCTAssertTrue(!rows.isEmpty && rows.count < 6)
        assertClose(gate.value, masked.gate, tol: 1e-5, "gate")
        assertClose(l1.value, masked.logits1, tol: 1e-5, "head 1 against the masked computation")
        assertClose(l2.value, masked.logits2, tol: 1e-5, "head 2 against the masked computation")
        let conv = { (cin: Int, cout: Int, pixels: Int) in cin * cout * 9 * pixels }
        let base = conv(3, 8, 64) + conv(8, 6, 64) + conv(14, 6, 64) + conv(20, 12, 16) + 8 + 14 * 4 + 32 * 4
        let block = 2 * conv(8, 8, 64)
        for s in 0..<6 {
            XCTAssertEqual(e.sampleCosts[s].macs, base + (rows.contains(s) ? block : 0), "sample \(s) MACs")
        }
        // ReLU: stem, unit1, grow1, grow2, branch (8·64, 8·64, 6·64, 6·64, 12·16 elements);
        // pooling: three global pools (8, 14, 32 channels × 64) — none of them gated except unit1.
        let relu = 8 * 64 + 6 * 64 + 6 * 64 + 12 * 16, pools = (8 + 14 + 32) * 64, bias = 1 + 4 + 4
        for s in 0..<6 {
            XCTAssertEqual(e.sampleCosts[s].referenceFLOPs,
                           base + bias + relu + pools + (rows.contains(s) ? block + 8 * 64 : 0), "sample \(s) reference FLOPs")
        }
    }

    /// Executed cost of the dense ResNets equals the analytic count of their layers.
    func testResNetExecutedCostIsTheAnalyticCount() {
        var rng = SeededRNG(seed: 23)
        for model in [CIFARResNet.depth(20), CIFARResNet.depth(56), CIFARResNet.resnet18()] {
            model.eval()
            let e = Engine(threads: 2)
            e.begin(batch: 2, recording: false)
            _ = model.forward(e.input(Tensor.normal([2, 3, 32, 32], rng: &rng)))
            let macs = model.macsPerImage()
            // Reference FLOPs add one per ReLU output (stem and both units of every block), the
            // global pool (C·H·W) and the linear bias.
            var relu = 0, hw = 32 * 32
            relu += model.conv1.config.outChannels * hw
            var lastChannels = model.conv1.config.outChannels
            for b in model.stages.joined() {
                let o = b.conv1.config.outputSize(h: Int(Double(hw).squareRoot()), w: Int(Double(hw).squareRoot()))
                hw = o.h * o.w
                relu += 2 * b.conv1.config.outChannels * hw
                lastChannels = b.conv2.config.outChannels
            }
            let expected = macs + relu + lastChannels * hw + 10
            XCTAssertEqual(e.sampleCosts, [ComputeCost](repeating: ComputeCost(macs: macs, referenceFLOPs: expected), count: 2),
                           model.name)
        }
    }
}
