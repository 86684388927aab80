/// A dense convolution kernel variant by name — the one table the tests and `dynbench` both
/// iterate (DESIGN §2). Names are `{pass}{k}x{k}[s{stride}]_c{Cin}_k{Cout}_{H}x{W}`, padding k/2:
/// `conv…` runs the forward convolution (the im2col route when Cin < 8), `dgrad…` the input
/// gradient, `wgrad…` the weight gradient; `kernelName(options:)` says which microkernel that is
/// with the given `KernelOptions`. All three passes cost 2 × the convolution's multiply-adds.
public struct ConvVariant: Hashable, Sendable, CustomStringConvertible {
    public enum Pass: String, Sendable, CaseIterable {
        case forward = "conv", inputGradient = "dgrad", weightGradient = "wgrad"
    }

    public var pass: Pass
    public var config: Conv2DConfig
    public var height: Int, width: Int

    public init(_ pass: Pass, _ config: Conv2DConfig, height: Int, width: Int) {
        precondition(config.groups == 1, "blocked convolution kernels handle groups = 1")
        (self.pass, self.config, self.height, self.width) = (pass, config, height, width)
    }

    /// Parses a name such as `conv3x3_c64_k64_32x32` or `wgrad1x1s2_c16_k32_32x32`.
    public init?(name: String) {
        let parts = name.split(separator: "_")
        guard parts.count == 4, let pass = Pass.allCases.first(where: { parts[0].hasPrefix($0.rawValue) }),
              parts[1].hasPrefix("c"), parts[2].hasPrefix("k"),
              let cin = Int(parts[1].dropFirst()), let cout = Int(parts[2].dropFirst()), cin > 0, cout > 0 else { return nil }
        let size = parts[3].split(separator: "x")
        let geo = parts[0].dropFirst(pass.rawValue.count).split(separator: "s")
        guard size.count == 2, let h = Int(size[0]), let w = Int(size[1]), h > 0, w > 0, geo.count <= 2,
              let k = Int(geo.first?.split(separator: "x").first ?? "3"), k > 0,
              let stride = geo.count > 1 ? Int(geo[1]) : 1, stride > 0 else { return nil }
        let c = Conv2DConfig(inChannels: cin, outChannels: cout, kernelSize: k, stride: stride, padding: k / 2)
        guard c.outputSize(h: h, w: w).h > 0 && c.outputSize(h: h, w: w).w > 0 else { return nil }
        self.init(pass, c, height: h, width: w)
    }

    public var name: String {
        let c = config
        return "\(pass.rawValue)\(c.kernelH)x\(c.kernelW)\(c.strideH > 1 ? "s\(c.strideH)" : "")_c\(c.inChannels)_k\(c.outChannels)_\(height)x\(width)"
    }

    public var description: String { name }

    public func kernelName(options: KernelOptions = .fastest) -> String {
        switch pass {
        case .forward:
            let o = config.outputSize(h: height, w: width)
            return BlockedConv2D.kernelName(for: config, outputWidth: o.w, outputHeight: o.h, options: options)
        case .inputGradient:
            return BlockedConvInputGradient.kernelName(for: config, inputWidth: width, inputHeight: height, options: options)
        case .weightGradient:
            return BlockedConvWeightGradient.kernelName(for: config, outputWidth: config.outputSize(h: height, w: width).w,
                                                        gradOutputHalo: Swift.max(config.kernelH, config.kernelW),
                                                        options: options)
        }
    }

    /// 2 × multiply-adds per image.
    public var flopsPerImage: Int { 2 * config.macs(h: height, w: width) }

    /// The shapes of the ResNet training steps and the peers' convolution layers, plus edge cases
    /// (partial channel blocks, odd sizes, a strided 1×1), for every pass.
    public static let catalog: [ConvVariant] = {
        let shapes = ["3x3_c3_k16_32x32", "3x3_c16_k16_32x32", "3x3s2_c16_k32_32x32", "1x1s2_c16_k32_32x32",
                      "3x3_c32_k32_16x16", "3x3_c64_k64_8x8", "3x3_c64_k64_32x32", "3x3_c128_k128_16x16",
                      "3x3_c256_k256_8x8", "3x3_c512_k512_4x4", "3x3_c12_k20_7x9", "3x3s2_c20_k12_9x7",
                      "1x1_c24_k40_5x5", "5x5_c8_k8_6x6"]
        return Pass.allCases.flatMap { p in shapes.map { ConvVariant(name: p.rawValue + $0)! } }
    }()

    /// Random inputs for `batch` images and a call that runs the variant once on them.
    public func prepare(batch: Int, threads: Int?, seed: UInt64 = 0, options: KernelOptions = .fastest) -> () -> Void {
        let r = Run(self, batch: batch, seed: seed, options: options)
        return { r.execute(threads: threads) }
    }

    /// The variant's fast result and its `Reference` twin's, on random data (for tests).
    public func check(batch: Int, threads: Int?, seed: UInt64 = 0,
                      options: KernelOptions = .fastest) -> (fast: Tensor, reference: Tensor) {
        let r = Run(self, batch: batch, seed: seed, options: options)
        return (r.fast(threads: threads), r.reference())
    }

    /// Inputs and packed kernels of one variant.
    private final class Run {
        let v: ConvVariant
        let x: Tensor, w: Tensor, dy: Tensor
        let xb: BlockedBuffer, dyb: BlockedBuffer, out: BlockedBuffer
        let forward: BlockedConv2D?, inputGradient: BlockedConvInputGradient?
        let options: KernelOptions

        init(_ v: ConvVariant, batch n: Int, seed: UInt64, options: KernelOptions) {
            (self.v, self.options) = (v, options)
            var rng = SeededRNG(seed: seed)
            let c = v.config, o = c.outputSize(h: v.height, w: v.width)
            x = Tensor.normal([n, c.inChannels, v.height, v.width], rng: &rng)
            w = Tensor.normal(c.weightShape, rng: &rng)
            dy = Tensor.normal([n, c.outChannels, o.h, o.w], rng: &rng)
            let halo = Swift.max(c.kernelH, c.kernelW)
            xb = BlockedBuffer(x, halo: halo)
            dyb = BlockedBuffer(dy, halo: halo)
            switch v.pass {
            case .forward:
                forward = BlockedConv2D(weight: w, bias: nil, config: c, options: options)
                inputGradient = nil
                out = BlockedBuffer(BlockedShape(n: n, c: c.outChannels, h: o.h, w: o.w, halo: 1))
            case .inputGradient:
                forward = nil
                inputGradient = BlockedConvInputGradient(weight: w, config: c, options: options)
                out = BlockedBuffer(BlockedShape(n: n, c: c.inChannels, h: v.height, w: v.width, halo: 1))
            case .weightGradient:
                (forward, inputGradient) = (nil, nil)
                out = dyb
            }
        }

        /// One run of the kernel; the result stays in `out` (or is returned: weight gradients).
        @discardableResult
        func execute(threads: Int?) -> Tensor? {
            switch v.pass {
            case .forward:
                if forward!.usesIm2col { forward!.run(nchw: x, into: out, threads: threads) } else {
                    forward!.run(xb, into: out, threads: threads)
                }
            case .inputGradient:
                inputGradient!.run(dyb, into: out, threads: threads)
            case .weightGradient:
                return BlockedConvWeightGradient.compute(input: xb, gradOutput: dyb, config: v.config, threads: threads,
                                                        options: options)
            }
            return nil
        }

        func fast(threads: Int?) -> Tensor { execute(threads: threads) ?? out.toTensor() }

        func reference() -> Tensor {
            switch v.pass {
            case .forward: return Reference.conv2d(x, weight: w, config: v.config)
            case .inputGradient:
                return Reference.conv2dBackwardInput(dy, weight: w, config: v.config, inputHeight: v.height, inputWidth: v.width)
            case .weightGradient: return Reference.conv2dBackwardWeight(dy, input: x, config: v.config)
            }
        }
    }
}
