/// The work one sample cost, counted by the engine from the ops it actually ran (never from a
/// formula beside the model): a sample that skipped a block is not charged for it.
///
/// Two figures, never mixed:
/// - `macs`: multiply-adds of convolutions and linear layers (the usual "2 × MACs = FLOPs").
/// - `referenceFLOPs`: the figure of the MSDNet/RANet reference counter (`op_counter.py`,
///   DESIGN §5), which calls its unit "FLOPs": convolution Cin·Cout·k²·Ho·Wo/groups (no bias),
///   ReLU one per element, pooling C·Ho·Wo·k², linear weights + bias; batch norm,
///   interpolation, concatenation and additions count 0.
public struct ComputeCost: Sendable, Equatable, Hashable, CustomStringConvertible {
    public var macs: Int
    public var referenceFLOPs: Int

    public init(macs: Int = 0, referenceFLOPs: Int = 0) {
        self.macs = macs
        self.referenceFLOPs = referenceFLOPs
    }

    public static let zero = ComputeCost()

    public static func + (a: ComputeCost, b: ComputeCost) -> ComputeCost {
        ComputeCost(macs: a.macs + b.macs, referenceFLOPs: a.referenceFLOPs + b.referenceFLOPs)
    }

    public static func += (a: inout ComputeCost, b: ComputeCost) { a = a + b }

    public var description: String {
        "\(macs) MACs, \(referenceFLOPs) reference FLOPs"
    }
}
