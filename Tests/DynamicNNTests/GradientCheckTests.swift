import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import TestSupport
import XCTest

/// Central differences of L = Σ f(x)·r (r a fixed random projection, sum in Double).
/// For maps that are linear in the perturbed tensor the difference is exact up to rounding,
/// so a large step is used; piecewise-linear maps get inputs kept further than `h` from
/// their kinks; smooth nonlinear maps (batch norm, cross-entropy) are evaluated in Double.
enum FiniteDifferences {
    static func projection(_ y: Tensor, _ r: Tensor) -> Double {
        zip(y.scalars, r.scalars).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }

    /// dL/dx by central differences, L(x) = loss(x).
    static func gradient(of x: Tensor, h: Float, _ loss: (Tensor) -> Double) -> Tensor {
        var g = Tensor(zeros: x.shape)
        var xp = x
        g.withUnsafeMutableBufferPointer { gb in
            for i in 0..<x.count {
                let v = xp.withUnsafeBufferPointer { $0[i] }
                xp.withUnsafeMutableBufferPointer { $0[i] = v + h }
                let up = loss(xp)
                xp.withUnsafeMutableBufferPointer { $0[i] = v - h }
                let down = loss(xp)
                xp.withUnsafeMutableBufferPointer { $0[i] = v }
                // Divide by the step actually taken (v ± h rounds to Float).
                gb[i] = Float((up - down) / (Double(v + h) - Double(v - h)))
            }
        }
        return g
    }

    /// dL/dp for a parameter, perturbing it in place.
    static func gradient(of p: Parameter, h: Float, _ loss: () -> Double) -> Tensor {
        let original = p.value
        defer { p.value = original }
        return gradient(of: original, h: h) { v in p.value = v; return loss() }
    }

    /// Checks a layer's input and parameter gradients for L = Σ layer(x)·r.
    static func checkLayer(_ layer: any Differentiable, input x: Tensor, h: Float, tol: Float, seed: UInt64 = 1,
                           label: String = "", file: StaticString = #filePath, line: UInt = #line) {
        layer.train()
        var rng = SeededRNG(seed: seed)
        let r = Tensor.normal(layer(x).shape, rng: &rng)
        layer.zeroGrad()
        _ = layer(x)
        let dx = layer.backward(r)
        let loss = { (v: Tensor) in projection(layer(v), r) }
        assertClose(dx, gradient(of: x, h: h, loss), tol: tol, "\(type(of: layer)) \(label) input", file: file, line: line)
        for (name, p) in layer.namedParameters() where p.isTrainable {
            guard let analytic = p.grad else { XCTFail("\(name) has no gradient", file: file, line: line); continue }
            assertClose(analytic, gradient(of: p, h: h) { projection(layer(x), r) }, tol: tol,
                        "\(type(of: layer)) \(label) \(name)", file: file, line: line)
        }
    }

    /// Distinct values (k + ½)·spacing for random integers k, |k| ≤ count: no two tie, and every
    /// value is at least spacing/2 from the kinks at 0 and 1 (for spacings dividing 1).
    static func spreadValues(_ shape: [Int], spacing: Float, seed: UInt64) -> Tensor {
        var rng = SeededRNG(seed: seed)
        let n = Tensor.count(of: shape)
        let grid = MiniBatches.permutation(2 * n, rng: &rng).prefix(n).map { Float($0 - n) * spacing + spacing / 2 }
        return Tensor(shape: shape, scalars: grid)
    }
}

/// Double-precision twins of the smooth nonlinear forwards, for accurate differences.
enum DoubleForward {
    /// Training-mode batch norm output, [N, C, …] in, biased batch variance.
    static func batchNorm(_ x: Tensor, gamma: Tensor, beta: Tensor, eps: Double) -> [Double] {
        let n = x.shape[0], c = x.shape[1], plane = x.count / (n * c)
        let xs = x.scalars.map(Double.init), g = gamma.scalars, b = beta.scalars
        var y = [Double](repeating: 0, count: x.count)
        for ch in 0..<c {
            let idx = (0..<n).flatMap { img in (0..<plane).map { (img * c + ch) * plane + $0 } }
            let mean = idx.reduce(0.0) { $0 + xs[$1] } / Double(idx.count)
            let variance = idx.reduce(0.0) { $0 + (xs[$1] - mean) * (xs[$1] - mean) } / Double(idx.count)
            for i in idx { y[i] = Double(g[ch]) * (xs[i] - mean) / (variance + eps).squareRoot() + Double(b[ch]) }
        }
        return y
    }

    /// Mean cross-entropy with PyTorch's label smoothing.
    static func crossEntropy(_ logits: Tensor, _ labels: [Int], smoothing: Double) -> Double {
        crossEntropy(logits.scalars.map(Double.init), classes: logits.shape[1], labels, smoothing: smoothing)
    }

    static func crossEntropy(_ ls: [Double], classes c: Int, _ labels: [Int], smoothing: Double) -> Double {
        var total = 0.0
        for (r, label) in labels.enumerated() {
            let row = Array(ls[(r * c)..<((r + 1) * c)])
            let mx = row.max()!
            let lse = mx + log(row.reduce(0) { $0 + exp($1 - mx) })
            for j in 0..<c { total -= ((j == label ? 1 - smoothing : 0) + smoothing / Double(c)) * (row[j] - lse) }
        }
        return total / Double(labels.count)
    }
}

/// Every backward pass against central differences.
final class GradientCheckTests: XCTestCase {
    func testConv2dVariants() {
        var rng = SeededRNG(seed: 31)
        let configs: [(String, Conv2DConfig, Int)] = [
            ("3x3 s1 p1", Conv2DConfig(inChannels: 3, outChannels: 4, kernelSize: 3, padding: 1), 5),
            ("3x3 s2 p1", Conv2DConfig(inChannels: 3, outChannels: 5, kernelSize: 3, stride: 2, padding: 1), 7),
            ("1x1", Conv2DConfig(inChannels: 4, outChannels: 3, kernelSize: 1), 4),
            ("1x1 s2", Conv2DConfig(inChannels: 4, outChannels: 3, kernelSize: 1, stride: 2), 5),
            ("dilated", Conv2DConfig(inChannels: 2, outChannels: 3, kernelSize: 3, padding: 2, dilation: 2), 6),
            ("grouped", Conv2DConfig(inChannels: 4, outChannels: 6, kernelSize: 3, padding: 1, groups: 2), 4),
            ("depthwise", Conv2DConfig(inChannels: 3, outChannels: 3, kernelSize: 3, padding: 1, groups: 3), 5),
            ("depthwise x2 s2", Conv2DConfig(inChannels: 2, outChannels: 4, kernelSize: 3, stride: 2, padding: 1, groups: 2), 6),
            ("5x3 rect", Conv2DConfig(inChannels: 2, outChannels: 2, kernelSize: (3, 2), stride: (1, 2), padding: (1, 0)), 5),
        ]
        for (name, cfg, size) in configs {
            let conv = Conv2d(cfg, bias: true, rng: &rng)
            let x = Tensor.normal([2, cfg.inChannels, size, size + 1], rng: &rng)
            // Linear in x and in the parameters: a large step is exact up to rounding.
            FiniteDifferences.checkLayer(conv, input: x, h: 0.5, tol: 1e-4, label: name)
        }
    }

    func testLinear() {
        var rng = SeededRNG(seed: 32)
        let layer = Linear(7, 5, rng: &rng)
        FiniteDifferences.checkLayer(layer, input: Tensor.normal([3, 7], rng: &rng), h: 0.5, tol: 1e-4)
    }

    func testActivations() {
        // Values on a 0.05 grid, none within 0.025 of the kinks at 0 and 1.
        let x = FiniteDifferences.spreadValues([2, 3, 4, 5], spacing: 0.05, seed: 3)
        for act in [Activation.relu, .relu1, .leakyRelu1(slope: 0.1)] {
            FiniteDifferences.checkLayer(ActivationLayer(act), input: x, h: 0.01, tol: 1e-3)
        }
    }

    func testPooling() {
        // Distinct values 0.05 apart: no ties within a step of h = 0.01.
        let x = FiniteDifferences.spreadValues([2, 3, 7, 6], spacing: 0.05, seed: 4)
        FiniteDifferences.checkLayer(MaxPool2d(kernelSize: 2), input: x, h: 0.01, tol: 1e-3)
        FiniteDifferences.checkLayer(MaxPool2d(kernelSize: 3, stride: 2, padding: 1), input: x, h: 0.01, tol: 1e-3)
        FiniteDifferences.checkLayer(AvgPool2d(kernelSize: 3, stride: 2, padding: 1), input: x, h: 0.5, tol: 1e-4)
        FiniteDifferences.checkLayer(AvgPool2d(kernelSize: 3, stride: 1, padding: 1, countIncludePad: false),
                                     input: x, h: 0.5, tol: 1e-4)
        FiniteDifferences.checkLayer(GlobalAvgPool2d(), input: x, h: 0.5, tol: 1e-4)
        FiniteDifferences.checkLayer(Flatten(), input: x, h: 0.5, tol: 1e-5)
        FiniteDifferences.checkLayer(Sequential(MaxPool2d(kernelSize: 2), Flatten()), input: x, h: 0.01, tol: 1e-3)
    }

    func testBatchNormTraining() {
        var rng = SeededRNG(seed: 33)
        for shape in [[4, 3, 3, 2], [6, 5], [1, 2, 3, 3]] {
            let c = shape[1]
            let bn = BatchNorm2d(c)
            bn.weight.value = Tensor.uniform([c], low: 0.5, high: 1.5, rng: &rng)
            bn.bias.value = Tensor.normal([c], rng: &rng)
            let x = Tensor.normal(shape, mean: 0.5, std: 2, rng: &rng)
            let r = Tensor.normal(shape, rng: &rng)
            bn.train()
            bn.zeroGrad()
            _ = bn(x)
            let dx = bn.backward(r)
            let rs = r.scalars.map(Double.init), eps = Double(bn.eps)
            func loss(_ x: Tensor, _ g: Tensor, _ b: Tensor) -> Double {
                zip(DoubleForward.batchNorm(x, gamma: g, beta: b, eps: eps), rs).reduce(0) { $0 + $1.0 * $1.1 }
            }
            let (g, b) = (bn.weight.value, bn.bias.value)
            assertClose(dx, FiniteDifferences.gradient(of: x, h: 1e-3) { loss($0, g, b) }, tol: 1e-4, "dx \(shape)")
            assertClose(bn.weight.grad!, FiniteDifferences.gradient(of: g, h: 1e-3) { loss(x, $0, b) }, tol: 1e-4, "dγ")
            assertClose(bn.bias.grad!, FiniteDifferences.gradient(of: b, h: 1e-3) { loss(x, g, $0) }, tol: 1e-4, "dβ")
        }
    }

    func testCrossEntropyWithAndWithoutLabelSmoothing() {
        var rng = SeededRNG(seed: 34)
        let logits = Tensor.normal([4, 6], std: 2, rng: &rng)
        let labels = [0, 5, 2, 2]
        for smoothing in [0, 0.1, 0.3] as [Float] {
            let l = Loss.crossEntropy(logits: logits, labels: labels, labelSmoothing: smoothing)
            let exact = DoubleForward.crossEntropy(logits, labels, smoothing: Double(smoothing))
            XCTAssertEqual(Double(l.value), exact, accuracy: 1e-6 * max(1, exact))
            let num = FiniteDifferences.gradient(of: logits, h: 1e-3) {
                DoubleForward.crossEntropy($0, labels, smoothing: Double(smoothing))
            }
            assertClose(l.gradient, num, tol: 1e-5, "ε=\(smoothing)")
        }
        let multi = Loss.multiExitCrossEntropy(logits: [logits, logits.scaled(by: 0.5)], labels: labels)
        XCTAssertEqual(multi.value, Loss.crossEntropy(logits: logits, labels: labels).value
                       + Loss.crossEntropy(logits: logits.scaled(by: 0.5), labels: labels).value, accuracy: 1e-6)
        XCTAssertEqual(multi.gradients[1].scalars, Loss.crossEntropy(logits: logits.scaled(by: 0.5), labels: labels).gradient.scalars)
    }

    func testL1AndLossHooks() {
        let x = FiniteDifferences.spreadValues([2, 5], spacing: 0.1, seed: 5)
        let l1 = Loss.l1(x, weight: 0.3)
        XCTAssertEqual(Double(l1.value), x.scalars.reduce(0.0) { $0 + 0.3 * Double(abs($1)) }, accuracy: 1e-5)
        assertClose(l1.gradient, FiniteDifferences.gradient(of: x, h: 0.01) { Double(Loss.l1($0, weight: 0.3).value) },
                    tol: 1e-3)

        // A hooked L1 inside a network adds its gradient to the one flowing back.
        var rng = SeededRNG(seed: 6)
        let hook = LossHook { Loss.l1($0, weight: 0.05) }
        let net = Sequential(Linear(5, 4, rng: &rng), hook, ActivationLayer.relu1(), Linear(4, 3, rng: &rng))
        let input = Tensor.normal([2, 5], rng: &rng)
        let r = Tensor.normal([2, 3], rng: &rng)
        net.train()
        net.zeroGrad()
        _ = net(input)
        XCTAssertEqual(net.hookedLossValue, hook.value)
        let dx = net.backward(r)
        let total = { (v: Tensor) -> Double in
            FiniteDifferences.projection(net(v), r) + Double(net.hookedLossValue)
        }
        assertClose(dx, FiniteDifferences.gradient(of: input, h: 1e-2, total), tol: 5e-3)

        // A joint loss over two hooks: (mean of both tensors − 0.5)², like the batch activation loss.
        let h1 = LossHook(), h2 = LossHook()
        let a = Tensor.normal([3, 2], rng: &rng), b = Tensor.normal([3, 4], rng: &rng)
        h1.train(); h2.train()
        _ = h1(a); _ = h2(b)
        func joint(_ ts: [Tensor]) -> (value: Float, gradients: [Tensor]) {
            let n = Float(ts.reduce(0) { $0 + $1.count })
            let mean = ts.reduce(Float(0)) { $0 + $1.sum() } / n
            return ((mean - 0.5) * (mean - 0.5), ts.map { Tensor(shape: $0.shape, repeating: 2 * (mean - 0.5) / n) })
        }
        let value = Loss.joint([h1, h2], joint)
        XCTAssertEqual(value, joint([a, b]).value)
        let ga = h1.backward(Tensor(zeros: [3, 2]))
        assertClose(ga, FiniteDifferences.gradient(of: a, h: 0.1) { Double(joint([$0, b]).value) }, tol: 1e-3)
        XCTAssertEqual(h2.backward(Tensor(zeros: [3, 4])).shape, [3, 4])
    }

    func testConcatAddAndResizeOps() {
        var rng = SeededRNG(seed: 35)
        let a = Tensor.normal([2, 3, 4, 5], rng: &rng), b = Tensor.normal([2, 2, 4, 5], rng: &rng)
        let r = Tensor.normal([2, 5, 4, 5], rng: &rng)
        let parts = Ops.concatChannelsBackward(r, channels: [3, 2])
        assertClose(parts[0], FiniteDifferences.gradient(of: a, h: 0.5) {
            FiniteDifferences.projection(Ops.concatChannels([$0, b]), r) }, tol: 1e-5)
        assertClose(parts[1], FiniteDifferences.gradient(of: b, h: 0.5) {
            FiniteDifferences.projection(Ops.concatChannels([a, $0]), r) }, tol: 1e-5)

        // Residual add + ReLU: both inputs get the masked gradient.
        let x = FiniteDifferences.spreadValues([2, 3, 2, 2], spacing: 0.05, seed: 7)
        let y = Tensor.normal([2, 3, 2, 2], std: 0.01, rng: &rng)
        let ry = Tensor.normal([2, 3, 2, 2], rng: &rng)
        let g = Ops.activationBackward(ry, input: x + y, .relu)
        assertClose(g, FiniteDifferences.gradient(of: x, h: 0.005) {
            FiniteDifferences.projection(Ops.add($0, y, activation: .relu), ry) }, tol: 1e-3)
        assertClose(g, FiniteDifferences.gradient(of: y, h: 0.005) {
            FiniteDifferences.projection(Ops.add(x, $0, activation: .relu), ry) }, tol: 1e-3)

        for (h, w, oh, ow) in [(3, 4, 7, 9), (6, 7, 3, 4), (4, 4, 1, 2), (1, 3, 4, 5)] {
            let x = Tensor.normal([2, 2, h, w], rng: &rng), rr = Tensor.normal([2, 2, oh, ow], rng: &rng)
            assertClose(Ops.resizeBilinearAlignCornersBackward(rr, inputHeight: h, inputWidth: w),
                        FiniteDifferences.gradient(of: x, h: 0.5) {
                            FiniteDifferences.projection(Ops.resizeBilinearAlignCorners($0, height: oh, width: ow), rr) },
                        tol: 1e-4, "resize \(h)×\(w) → \(oh)×\(ow)")
        }
    }

    func testBasicBlockAndTinyResNetEndToEnd() {
        var rng = SeededRNG(seed: 36)
        // Both shortcut kinds under a random projection loss.
        for stride in [1, 2] {
            let block = BasicBlock(3, stride == 1 ? 3 : 4, stride: stride, rng: &rng)
            for (_, p) in block.namedParameters() where p.isTrainable && p.value.rank == 1 {
                p.value = Tensor.uniform(p.value.shape, low: 0.5, high: 1.5, rng: &rng)   // non-trivial γ, β
            }
            let x = Tensor.normal([3, 3, 4, 4], rng: &rng)
            let r = Tensor.normal(block(x).shape, rng: &rng)
            let rs = r.scalars.map(Double.init)
            DoubleNet.check(block, input: x, seedGradient: r) { x, p in
                zip(DoubleNet.block(x, p, "", stride: stride).v, rs).reduce(0) { $0 + $1.0 * $1.1 }
            }
        }
        // A two-stage ResNet (identity and projection blocks) under cross-entropy.
        let net = CIFARResNet(name: "tiny", widths: [4, 8], blocksPerStage: [1, 1], classes: 3, seed: 2)
        let images = Tensor.normal([4, 3, 6, 6], rng: &rng)
        let labels = [0, 2, 1, 2]
        net.train()
        let seed = Loss.crossEntropy(logits: net(images), labels: labels).gradient
        DoubleNet.check(net, input: images, seedGradient: seed) { x, p in
            var h = DoubleNet.relu(DoubleNet.bn(DoubleNet.conv(x, p["conv1.weight"]!, stride: 1, pad: 1), p, "bn1."))
            h = DoubleNet.block(h, p, "layer1.0.", stride: 1)
            h = DoubleNet.block(h, p, "layer2.0.", stride: 2)
            return DoubleNet.crossEntropy(DoubleNet.linear(DoubleNet.globalAvgPool(h), p, "linear."), labels)
        }
    }
}

/// A Double-precision twin of BasicBlock and the CIFAR ResNet in training mode, so that
/// central differences with a tiny step (1e-6) neither cross ReLU kinks nor drown in Float
/// rounding. Parameters come from the module's state dict, keyed the same way.
enum DoubleNet {
    struct T { var shape: [Int]; var v: [Double] }
    typealias Params = [String: T]

    static func conv(_ x: T, _ w: T, stride: Int, pad: Int) -> T {
        let (n, cin, h, wd) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (cout, k) = (w.shape[0], w.shape[2])
        let ho = (h + 2 * pad - k) / stride + 1, wo = (wd + 2 * pad - k) / stride + 1
        var y = [Double](repeating: 0, count: n * cout * ho * wo)
        for b in 0..<n { for o in 0..<cout { for i in 0..<ho { for j in 0..<wo {
            var s = 0.0
            for c in 0..<cin { for ki in 0..<k { for kj in 0..<k {
                let ih = i * stride - pad + ki, iw = j * stride - pad + kj
                if ih >= 0 && ih < h && iw >= 0 && iw < wd {
                    s += x.v[((b * cin + c) * h + ih) * wd + iw] * w.v[((o * cin + c) * k + ki) * k + kj]
                }
            } } }
            y[((b * cout + o) * ho + i) * wo + j] = s
        } } } }
        return T(shape: [n, cout, ho, wo], v: y)
    }

    static func bn(_ x: T, _ p: Params, _ prefix: String) -> T {
        let n = x.shape[0], c = x.shape[1], plane = x.v.count / (n * c)
        let g = p[prefix + "weight"]!.v, b = p[prefix + "bias"]!.v
        var y = x.v
        for ch in 0..<c {
            let idx = (0..<n).flatMap { img in (0..<plane).map { (img * c + ch) * plane + $0 } }
            let mean = idx.reduce(0.0) { $0 + x.v[$1] } / Double(idx.count)
            let variance = idx.reduce(0.0) { $0 + (x.v[$1] - mean) * (x.v[$1] - mean) } / Double(idx.count)
            for i in idx { y[i] = g[ch] * (x.v[i] - mean) / (variance + 1e-5).squareRoot() + b[ch] }
        }
        return T(shape: x.shape, v: y)
    }

    static func relu(_ x: T) -> T { T(shape: x.shape, v: x.v.map { max($0, 0) }) }

    static func block(_ x: T, _ p: Params, _ prefix: String, stride: Int) -> T {
        let h = relu(bn(conv(x, p[prefix + "conv1.weight"]!, stride: stride, pad: 1), p, prefix + "bn1."))
        let main = bn(conv(h, p[prefix + "conv2.weight"]!, stride: 1, pad: 1), p, prefix + "bn2.")
        let sc = p[prefix + "shortcut.0.weight"].map {
            bn(conv(x, $0, stride: stride, pad: 0), p, prefix + "shortcut.1.")
        } ?? x
        return relu(T(shape: main.shape, v: zip(main.v, sc.v).map(+)))
    }

    static func globalAvgPool(_ x: T) -> T {
        let plane = x.shape[2] * x.shape[3]
        return T(shape: [x.shape[0], x.shape[1]],
                 v: (0..<(x.v.count / plane)).map { i in x.v[(i * plane)..<((i + 1) * plane)].reduce(0, +) / Double(plane) })
    }

    static func linear(_ x: T, _ p: Params, _ prefix: String) -> T {
        let w = p[prefix + "weight"]!, b = p[prefix + "bias"]!.v
        let (n, k, m) = (x.shape[0], x.shape[1], w.shape[0])
        return T(shape: [n, m], v: (0..<(n * m)).map { idx in
            let (r, o) = (idx / m, idx % m)
            return b[o] + (0..<k).reduce(0.0) { $0 + x.v[r * k + $1] * w.v[o * k + $1] }
        })
    }

    static func crossEntropy(_ logits: T, _ labels: [Int]) -> Double {
        DoubleForward.crossEntropy(logits.v, classes: logits.shape[1], labels, smoothing: 0)
    }

    /// Runs forward + backward on `model` (training mode) seeded with `seedGradient`, then checks
    /// the input gradient and every parameter gradient against central differences of the
    /// Double loss: the whole tensor along one random direction, and its largest, first and
    /// last elements one by one.
    static func check(_ model: any Differentiable, input x: Tensor, seedGradient: Tensor,
                      file: StaticString = #filePath, line: UInt = #line, loss: @escaping (T, Params) -> Double) {
        model.train()
        var params = Params()
        for (k, p) in model.namedParameters() where p.isTrainable {
            params[k] = T(shape: p.value.shape, v: p.value.scalars.map(Double.init))
        }
        model.zeroGrad()
        _ = model(x)
        let dx = model.backward(seedGradient)
        let input = T(shape: x.shape, v: x.scalars.map(Double.init))
        var grads: [(String, [Float], (T, Params, Int, Double) -> Double)] = [
            ("input", dx.scalars, { x, p, i, d in var x = x; x.v[i] += d; return loss(x, p) }),
        ]
        for (k, p) in model.namedParameters() where p.isTrainable {
            guard let g = p.grad else { XCTFail("\(k) has no gradient", file: file, line: line); continue }
            grads.append((k, g.scalars, { x, p, i, d in var p = p; p[k]!.v[i] += d; return loss(x, p) }))
        }
        let h = 1e-6
        var rng = SeededRNG(seed: 99)
        for (name, analytic, shifted) in grads {
            let scale = Double(analytic.map(abs).max()!)
            let worst = analytic.indices.max { abs(analytic[$0]) < abs(analytic[$1]) }!
            for i in Set([0, worst, analytic.count - 1]) {
                let numeric = (shifted(input, params, i, h) - shifted(input, params, i, -h)) / (2 * h)
                XCTAssertEqual(Double(analytic[i]), numeric, accuracy: 1e-4 * max(scale, 1e-3),
                               "\(type(of: model)) \(name)[\(i)]", file: file, line: line)
            }
            // Directional derivative over the whole tensor.
            let d = (0..<analytic.count).map { _ in Double(rng.nextNormal()) }
            func along(_ t: Double) -> Double {
                if name == "input" { var x = input; for i in x.v.indices { x.v[i] += t * d[i] }; return loss(x, params) }
                var p = params
                for i in d.indices { p[name]!.v[i] += t * d[i] }
                return loss(input, p)
            }
            let numeric = (along(h) - along(-h)) / (2 * h)
            let predicted = zip(analytic, d).reduce(0.0) { $0 + Double($1.0) * $1.1 }
            XCTAssertEqual(predicted, numeric, accuracy: 1e-4 * max(abs(numeric), 1e-3),
                           "\(type(of: model)) \(name) along a random direction", file: file, line: line)
        }
    }
}
