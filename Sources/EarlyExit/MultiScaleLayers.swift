import DynamicCore
import DynamicNN
import Foundation

// The building blocks MSDNet and RANet share, with the module names of the authors' PyTorch code
// (kalviny/MSDNet-PyTorch `models/msdnet.py`, yangle15/RANet-pytorch `models/RANet.py`), so that
// their state_dict keys are ours.

/// Children under explicit names: a PyTorch `Sequential` whose ReLUs leave gaps in the indices
/// (`net.0`, `net.1`, `net.3`, `net.4`), or a `ModuleList`.
final class ModuleGroup: Module {
    let entries: [(String, Module)]
    init(_ entries: [(String, Module)]) { self.entries = entries }
    /// Entries "0", "1", … in order.
    convenience init(list: [Module]) { self.init(list.enumerated().map { (String($0.offset), $0.element) }) }
    override var children: [(String, Module)] { entries }
}

/// Convolution (no bias) + batch norm + ReLU: `ConvBasic` (keys `net.0`, `net.1`).
/// x: [N, Cin, H, W] → [N, Cout, Ho, Wo].
public final class ConvBasic: Module {
    public let unit: ConvBNUnit

    public init(_ inChannels: Int, _ outChannels: Int, kernel: Int = 3, stride: Int = 1, padding: Int = 1,
                rng: inout SeededRNG) {
        unit = ConvBNUnit(conv: Conv2d(inChannels, outChannels, kernelSize: kernel, stride: stride, padding: padding,
                                       bias: false, rng: &rng),
                          bn: BatchNorm2d(outChannels), activation: .relu)
    }

    override public var children: [(String, Module)] { [("net", ModuleGroup([("0", unit.conv), ("1", unit.bn)]))] }

    public func callAsFunction(_ x: FeatureMap) -> FeatureMap { unit(x) }
}

/// MSDNet's `ConvBN`: an optional 1×1 bottleneck to min(Cin, bnWidth·Cout) channels, then a 3×3
/// convolution of stride 1 (`normal`) or 2 (`down`), each with batch norm and ReLU (keys `net.0`,
/// `net.1`, `net.3`, `net.4`; without bottleneck `net.0`, `net.1`).
final class MultiScaleConv: Module {
    let bottleneck: ConvBNUnit?, main: ConvBNUnit

    init(_ inChannels: Int, _ outChannels: Int, down: Bool, bottleneck: Bool, bnWidth: Int, rng: inout SeededRNG) {
        var inner = inChannels
        if bottleneck {
            inner = Swift.min(inChannels, bnWidth * outChannels)
            self.bottleneck = ConvBNUnit(conv: Conv2d(inChannels, inner, kernelSize: 1, bias: false, rng: &rng),
                                         bn: BatchNorm2d(inner), activation: .relu)
        } else {
            self.bottleneck = nil
        }
        main = ConvBNUnit(conv: Conv2d(inner, outChannels, kernelSize: 3, stride: down ? 2 : 1, padding: 1, bias: false, rng: &rng),
                          bn: BatchNorm2d(outChannels), activation: .relu)
    }

    override var children: [(String, Module)] {
        let layers: [(String, Module)] = bottleneck.map { b in [("0", b.conv), ("1", b.bn), ("3", main.conv), ("4", main.bn)] }
            ?? [("0", main.conv), ("1", main.bn)]
        return [("net", ModuleGroup(layers))]
    }

    func callAsFunction(_ x: FeatureMap) -> FeatureMap { main(bottleneck.map { $0(x) } ?? x) }
}
