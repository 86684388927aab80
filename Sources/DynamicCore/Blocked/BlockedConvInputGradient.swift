/// Input gradient of a dense convolution on NCHW8c buffers, run as forward convolutions of dY
/// with flipped, transposed weights on the `f32-conv-nchw8c-6x16` kernel.
///
/// For stride s > 1 the input pixels split into s_h·s_w phases: phase (py, px) holds the pixels
/// (s·m + py, s·n + px), and only the taps ky with ky·d ≡ py + p (mod s) reach them, at dY rows
/// m + (py + p − ky·d)/s. Each phase is a stride-1 convolution with that sub-kernel, written to
/// its pixels — exactly the useful multiply-adds (zero-stuffing dY would do s_h·s_w times more).
/// Stride 1 is the single phase with every tap: padding (k − 1)·d − p.
public final class BlockedConvInputGradient: @unchecked Sendable {
    /// The forward kernel the first phase runs on, for an input `inputWidth` wide (phases of a
    /// strided convolution have fewer taps and narrower output rows).
    public static func kernelName(for c: Conv2DConfig, inputWidth: Int, inputHeight: Int? = nil,
                                  options: KernelOptions = .fastest) -> String {
        // Phase (0, 0)'s convolution; it never takes the im2col route, whatever its input channels.
        var phase = phaseConfig(c, py: 0, px: 0) ?? Conv2DConfig(inChannels: c.outChannels, outChannels: c.inChannels, kernelSize: 1)
        phase.inChannels = Swift.max(phase.inChannels, 8)
        let forward = BlockedConv2D.kernelName(for: phase, outputWidth: (inputWidth + c.strideW - 1) / c.strideW,
                                               outputHeight: inputHeight.map { ($0 + c.strideH - 1) / c.strideH },
                                               options: options)
        return forward.replacingOccurrences(of: "f32-conv-", with: "f32-convdgrad-")
    }
    /// The forward convolution.
    public let config: Conv2DConfig

    struct Phase {
        let py: Int, px: Int
        /// Forward taps in the phase's tap order (ascending dY offset).
        let kys: [Int], kxs: [Int]
        let conv: BlockedConv2D?
    }
    private let phases: [Phase]

    /// Whether `config` can run here: groups = 1, and no phase needs dY rows beyond its
    /// window origin (true for padding ≥ stride − 1, e.g. every 3×3/pad 1 and 1×1/pad 0 conv).
    public static func supports(_ c: Conv2DConfig) -> Bool {
        guard c.groups == 1 else { return false }
        for py in 0..<c.strideH { if let o = offsets(py, c.padH, c.kernelH, c.dilationH, c.strideH), o.first! > 0 { return false } }
        for px in 0..<c.strideW { if let o = offsets(px, c.padW, c.kernelW, c.dilationW, c.strideW), o.first! > 0 { return false } }
        return true
    }

    /// weight: [Cout, Cin, kh, kw] of the forward convolution; `options`: the kernels the phases run on.
    public init(weight: Tensor, config c: Conv2DConfig, options: KernelOptions = .fastest) {
        precondition(Self.supports(c), "input gradient by convolution does not support \(c)")
        config = c
        var phases: [Phase] = []
        for py in 0..<c.strideH {
            for px in 0..<c.strideW {
                let kys = Self.taps(py, c.padH, c.kernelH, c.dilationH, c.strideH)
                let kxs = Self.taps(px, c.padW, c.kernelW, c.dilationW, c.strideW)
                var conv: BlockedConv2D?
                if let pc = Self.phaseConfig(c, py: py, px: px) {
                    conv = BlockedConv2D(weight: Self.phaseWeight(weight, c, kys, kxs), bias: nil, config: pc, im2col: false,
                                         options: options)
                }
                phases.append(Phase(py: py, px: px, kys: kys, kxs: kxs, conv: conv))
            }
        }
        self.phases = phases
    }

    /// Packs new forward weights [Cout, Cin, kh, kw].
    public func repack(weight: Tensor) {
        precondition(weight.shape == config.weightShape, "weight must be \(config.weightShape), got \(weight.shape)")
        for p in phases { p.conv?.repack(transposing: weight, of: config, kys: p.kys, kxs: p.kxs) }
    }

    /// The halo dY needs for an input of h × w: how far the phases' convolutions reach beyond
    /// dY on either side (1 for 3×3/pad 1, 0 for 1×1 convolutions; large strided kernels more).
    public func gradientHalo(inputHeight h: Int, inputWidth w: Int) -> Int {
        let c = config, o = c.outputSize(h: h, w: w)
        var halo = 0
        for p in phases {
            guard let pc = p.conv?.config else { continue }
            let height = (h - p.py + c.strideH - 1) / c.strideH, width = (w - p.px + c.strideW - 1) / c.strideW
            guard height > 0 && width > 0 else { continue }
            halo = Swift.max(halo, pc.padH, pc.padW,
                             (height - 1) + (pc.kernelH - 1) * pc.dilationH - pc.padH - (o.h - 1),
                             (width - 1) + (pc.kernelW - 1) * pc.dilationW - pc.padW - (o.w - 1))
        }
        return halo
    }

    /// True when dx is written by one convolution (stride 1): only then can `run` gather `moments`.
    public var isSinglePass: Bool { phases.count == 1 && phases[0].conv != nil }

    /// dx = dL/dx (+ residual) from dy = dL/dy. dy: [N, Cout, Ho, Wo] with a halo of
    /// max(kh, kw)·dilation (enough for every phase; 1 for 3×3/pad 1 and 1×1 convolutions);
    /// dx, residual: [N, Cin, H, W] with (Ho, Wo) the forward output size of (H, W); residual
    /// may be dx itself (every pixel reads its residual once, just before it is stored).
    /// `moments` (`isSinglePass` only): sums over dx gathered as it is stored, typically the
    /// `.gradientSums` of the batch norm whose output gradient dx is.
    public func run(_ dy: BlockedBuffer, into dx: BlockedBuffer, residual: BlockedBuffer? = nil, threads: Int? = nil,
                    moments: ConvMoments? = nil) {
        let c = config, sy = dy.shape, sx = dx.shape
        precondition(sy.n == sx.n && sy.c == c.outChannels && sx.c == c.inChannels
                     && c.outputSize(h: sx.h, w: sx.w) == (sy.h, sy.w), "input gradient: dY \(sy) does not match dX \(sx)")
        precondition(moments == nil || isSinglePass, "input gradient: moments need a single-pass (stride-1) convolution")
        for p in phases {
            let height = (sx.h - p.py + c.strideH - 1) / c.strideH, width = (sx.w - p.px + c.strideW - 1) / c.strideW
            guard height > 0 && width > 0 else { continue }
            let placement = BlockedConv2D.OutputPlacement(height: height, width: width, strideH: c.strideH,
                                                          strideW: c.strideW, offsetY: p.py, offsetX: p.px)
            if let conv = p.conv {
                // Stride 1: the one phase is all of dx, run unplaced (every route, Winograd too).
                conv.run(dy, into: dx, placement: isSinglePass ? nil : placement, residual: residual, threads: threads,
                         moments: moments)
            } else {
                Self.fill(dx, placement, from: residual, threads: threads)   // no tap reaches these pixels
            }
        }
    }

    // MARK: - Phase geometry

    /// The stride-1 convolution of dY that phase (py, px) runs (nil when no tap reaches it):
    /// its taps, padding −(first dY offset) and dilation the offsets' step.
    static func phaseConfig(_ c: Conv2DConfig, py: Int, px: Int) -> Conv2DConfig? {
        guard let oy = offsets(py, c.padH, c.kernelH, c.dilationH, c.strideH),
              let ox = offsets(px, c.padW, c.kernelW, c.dilationW, c.strideW) else { return nil }
        return Conv2DConfig(inChannels: c.outChannels, outChannels: c.inChannels, kernelSize: (oy.count, ox.count),
                            padding: (-oy[0], -ox[0]),
                            dilation: (oy.count > 1 ? oy[1] - oy[0] : 1, ox.count > 1 ? ox[1] - ox[0] : 1))
    }

    /// Forward taps reaching phase `q` in ascending dY offset: ky·d ≡ q + p (mod s), ky descending.
    static func taps(_ q: Int, _ p: Int, _ k: Int, _ d: Int, _ s: Int) -> [Int] {
        (0..<k).reversed().filter { (($0 * d - q - p) % s + s) % s == 0 }
    }

    /// dY row offsets (q + p − ky·d)/s of those taps (nil when none), ascending with constant step.
    static func offsets(_ q: Int, _ p: Int, _ k: Int, _ d: Int, _ s: Int) -> [Int]? {
        let t = taps(q, p, k, d, s)
        return t.isEmpty ? nil : t.map { (q + p - $0 * d) / s }
    }

    /// [Cin, Cout, |kys|, |kxs|]: the forward weights of the phase's taps, transposed.
    static func phaseWeight(_ w: Tensor, _ c: Conv2DConfig, _ kys: [Int], _ kxs: [Int]) -> Tensor {
        precondition(w.shape == c.weightShape, "weight must be \(c.weightShape), got \(w.shape)")
        return w.withUnsafeBufferPointer { wb in
            Tensor(shape: [c.inChannels, c.outChannels, kys.count, kxs.count]) { f in
                for ci in 0..<c.inChannels {
                    for co in 0..<c.outChannels {
                        for (a, ky) in kys.enumerated() {
                            for (b, kx) in kxs.enumerated() {
                                f[((ci * c.outChannels + co) * kys.count + a) * kxs.count + b] =
                                    wb[((co * c.inChannels + ci) * c.kernelH + ky) * c.kernelW + kx]
                            }
                        }
                    }
                }
            }
        }
    }

    /// The placed pixels of dx ← residual (or zero): the phases of a strided 1×1 convolution that
    /// no tap reaches (three of four at stride 2, e.g. a projection shortcut's).
    static func fill(_ dx: BlockedBuffer, _ p: BlockedConv2D.OutputPlacement, from residual: BlockedBuffer?,
                     threads: Int? = nil) {
        let s = dx.shape
        let (d, r) = (dx.pointer, residual.map { UnsafePointer($0.pointer) })
        let step = 8 * p.strideW
        Parallel.forEach(s.n * s.blocks, threads: threads) { t in
            let base = (t / s.blocks) * s.imageStride + (t % s.blocks) * s.blockStride
            for m in 0..<p.height {
                let o = base + s.pixelOffset(m * p.strideH + p.offsetY, p.offsetX)
                if let r {
                    for j in 0..<p.width { store8(load8(r + o + j * step), d + o + j * step) }
                } else {
                    for j in 0..<p.width { store8(SIMD8<Float>(), d + o + j * step) }
                }
            }
        }
    }
}
