import DynamicShims
import Foundation

// Weight packing of `BlockedConv2D`: 16-channel panels per pair of output blocks, the input
// gradient's transposed phases, and the Winograd weights derived from them.
extension BlockedConv2D {
    /// Packs new weights (and bias) of the same shape into this convolution, keeping its
    /// buffers and geometry caches: training re-packs every layer once per step.
    /// weight: [Cout, Cin, kh, kw]; bias: [Cout] or nil (zero).
    public func repack(weight: Tensor, bias b: Tensor?) {
        let c = config
        precondition(weight.shape == c.weightShape, "weight must be \(c.weightShape), got \(weight.shape)")
        let kk = c.kernelH * c.kernelW
        let panel = reductionBlocks * taps * lanes * 16
        weight.withUnsafeBufferPointer { w in
            // Reduction index: (block, tap, channel-in-block), or the im2col value ic·kk + t.
            // Training re-packs every layer each step: no per-element index arithmetic.
            let src = w.baseAddress!
            for oc in 0..<c.outChannels {
                let dst = packed + (oc / 16) * panel + oc % 16
                for ic in 0..<c.inChannels {
                    let from = src + (oc * c.inChannels + ic) * kk
                    if usesIm2col {
                        for t in 0..<kk { dst[(ic * kk + t) * 16] = from[t] }
                    } else {
                        let to = dst + ((ic / 8) * taps * 8 + ic % 8) * 16
                        for t in 0..<kk { to[t * 128] = from[t] }
                    }
                }
            }
        }
        if let u = winograd { packWinograd(into: u) }
        if let b {
            precondition(b.shape == [c.outChannels])
            b.withUnsafeBufferPointer { for i in 0..<c.outChannels { self.bias[i] = $0[i] } }
        } else {
            bias.update(repeating: 0, count: pairs * 16)
        }
    }

    /// Packs, for the input gradient of a forward convolution `forward` with weights
    /// w [Cout, Cin, kh, kw], its taps (kys × kxs) transposed — `phaseWeight` packed without the
    /// intermediate tensor (training re-packs every layer each step). This convolution's input
    /// channels are the forward's outputs and vice versa; no bias.
    func repack(transposing w: Tensor, of forward: Conv2DConfig, kys: [Int], kxs: [Int]) {
        let c = config, kk = forward.kernelH * forward.kernelW
        precondition(!usesIm2col && c.inChannels == forward.outChannels && c.outChannels == forward.inChannels
                     && taps == kys.count * kxs.count && w.shape == forward.weightShape, "transposed repack mismatched")
        let panel = reductionBlocks * taps * lanes * 16
        let tapOffsets = kys.flatMap { ky in kxs.map { kx in ky * forward.kernelW + kx } }
        w.withUnsafeBufferPointer { wb in
            let src = wb.baseAddress!
            for co in 0..<forward.outChannels {          // this convolution's input channel
                let row = ((co / 8) * taps * 8 + co % 8) * 16
                for ci in 0..<forward.inChannels {       // its output channel
                    let to = packed + (ci / 16) * panel + ci % 16 + row
                    let from = src + (co * forward.inChannels + ci) * kk
                    for (t, o) in tapOffsets.enumerated() { to[t * 128] = from[o] }
                }
            }
        }
        if let u = winograd { packWinograd(into: u) }
    }

    /// The bias as packed, [Cout].
    public var biasTensor: Tensor { Tensor(shape: [config.outChannels], scalars: Array(UnsafeBufferPointer(start: bias, count: config.outChannels))) }

}
