import Foundation

// Backward passes of the non-convolution ops (convolution: BackwardConv.swift). Each takes the
// gradient of the loss with respect to the op's output plus what the forward read, and
// returns gradients with respect to the inputs and parameters.

extension Activation {
    /// d act(x) / dx. At the kinks it takes PyTorch's side: ReLU and ReLU-1 pass gradient only
    /// strictly inside (0, ∞) and (0, 1); leaky ReLU-1 has slope 1 on the closed [0, 1].
    @inlinable
    public func derivative(at x: Float) -> Float {
        switch self {
        case .identity: return 1
        case .relu: return x > 0 ? 1 : 0
        case .relu1: return x > 0 && x < 1 ? 1 : 0
        case .leakyRelu1(let s): return x < 0 || x > 1 ? s : 1
        }
    }
}

extension Ops {
    /// Gradient of `activation(x, act)`: gradOutput ⊙ act′(input). Equal shapes, any rank.
    public static func activationBackward(_ gradOutput: Tensor, input: Tensor, _ act: Activation) -> Tensor {
        precondition(gradOutput.shape == input.shape, "activation gradient \(gradOutput.shape) ≠ input \(input.shape)")
        if act == .identity { return gradOutput }
        return gradOutput.withUnsafeBufferPointer { gb in
            input.withUnsafeBufferPointer { xb in
                Tensor(shape: input.shape) { out in
                    let g = gb.baseAddress!, x = xb.baseAddress!, d = out.baseAddress!, n = out.count
                    var i = 0
                    let zero = SIMD8<Float>(), one = SIMD8<Float>(repeating: 1)
                    switch act {
                    case .identity: break
                    case .relu:
                        while i + 8 <= n {
                            store8(load8(g + i).replacing(with: 0, where: load8(x + i) .<= zero), d + i); i += 8
                        }
                    case .relu1:
                        while i + 8 <= n {
                            let v = load8(x + i)
                            store8(load8(g + i).replacing(with: 0, where: (v .<= zero) .| (v .>= one)), d + i); i += 8
                        }
                    case .leakyRelu1(let s):
                        let sv = SIMD8<Float>(repeating: s)
                        while i + 8 <= n {
                            let v = load8(x + i), gv = load8(g + i)
                            store8(gv.replacing(with: gv * sv, where: (v .< zero) .| (v .> one)), d + i); i += 8
                        }
                    }
                    while i < n { d[i] = g[i] * act.derivative(at: x[i]); i += 1 }
                }
            }
        }
    }

    /// Training-mode batch norm backward, through the batch statistics. With
    /// x̂ = (x − μ)·invStd over the M = N·H·W values of each channel:
    /// dβ = Σ dy, dγ = Σ dy·x̂, dx = γ·invStd·(dy − dβ/M − x̂·dγ/M).
    /// x, gradOutput: [N, C, …]; mean, invStd, gamma: C values (invStd = 1/√(σ²_biased + ε)).
    public static func batchNormTrainingBackward(_ gradOutput: Tensor, input x: Tensor, mean: [Float], invStd: [Float],
                                                 gamma: Tensor) -> (input: Tensor, gamma: Tensor, beta: Tensor) {
        precondition(x.rank >= 2 && gradOutput.shape == x.shape, "batch norm gradient \(gradOutput.shape) ≠ input \(x.shape)")
        let n = x.shape[0], c = x.shape[1], plane = x.count / Swift.max(n * c, 1)
        precondition(mean.count == c && invStd.count == c && gamma.count == c, "batch norm statistics must have \(c) channels")
        let m = Float(n * plane)
        var dGamma = [Float](repeating: 0, count: c), dBeta = dGamma
        let gs = gamma.scalars
        let dx = x.withUnsafeBufferPointer { xb in
            gradOutput.withUnsafeBufferPointer { gb in
                let xp = xb.baseAddress!, gp = gb.baseAddress!
                // Σ dy and Σ dy·x (then Σ dy·x̂ = invStd·(Σ dy·x − μ·Σ dy)); Double across planes.
                for ch in 0..<c {
                    var sg = 0.0, sgx = 0.0
                    for img in 0..<n {
                        let o = (img * c + ch) * plane
                        sg += Double(sum(gp + o, plane))
                        sgx += Double(dot(gp + o, xp + o, plane))
                    }
                    dBeta[ch] = Float(sg)
                    dGamma[ch] = Float(Double(invStd[ch]) * (sgx - Double(mean[ch]) * sg))
                }
                return Tensor(shape: x.shape) { out in
                    for img in 0..<n {
                        for ch in 0..<c {
                            let o = (img * c + ch) * plane
                            let k = gs[ch] * invStd[ch]
                            // dx = k·dy − k·dβ/M − k·invStd·dγ/M·(x − μ) = a·dy + b·x + d
                            let b = -k * invStd[ch] * dGamma[ch] / m
                            let d = -k * dBeta[ch] / m - b * mean[ch]
                            let av = SIMD8<Float>(repeating: k), bv = SIMD8<Float>(repeating: b), dv = SIMD8<Float>(repeating: d)
                            let g = gp + o, xx = xp + o, dst = out.baseAddress! + o
                            var i = 0
                            while i + 8 <= plane { store8(fmadd(fmadd(dv, bv, load8(xx + i)), av, load8(g + i)), dst + i); i += 8 }
                            while i < plane { dst[i] = k * g[i] + b * xx[i] + d; i += 1 }
                        }
                    }
                }
            }
        }
        return (dx, Tensor(shape: [c], scalars: dGamma), Tensor(shape: [c], scalars: dBeta))
    }

    /// Gradient of `maxPool2d`: each output's gradient goes to the first maximum of its
    /// window in row-major order (PyTorch's tie rule). input: [N, C, H, W].
    public static func maxPool2dBackward(_ gradOutput: Tensor, input x: Tensor, _ p: Pool2DConfig) -> Tensor {
        let (h, w, ho, wo) = poolGeometry(gradOutput, x.shape, p)
        let planes = x.shape[0] * x.shape[1]
        return x.withUnsafeBufferPointer { xb in
            gradOutput.withUnsafeBufferPointer { gb in
                Tensor(shape: x.shape) { dx in
                    for pl in 0..<planes {
                        let src = xb.baseAddress! + pl * h * w, dst = dx.baseAddress! + pl * h * w
                        let g = gb.baseAddress! + pl * ho * wo
                        for oh in 0..<ho {
                            let h0 = oh * p.strideH - p.padH
                            let ha = Swift.max(h0, 0), hb = Swift.min(h0 + p.kernelH, h)
                            for ow in 0..<wo {
                                let w0 = ow * p.strideW - p.padW
                                let wa = Swift.max(w0, 0), wb = Swift.min(w0 + p.kernelW, w)
                                var best = -Float.infinity, at = ha * w + wa
                                for ih in ha..<hb {
                                    for iw in wa..<wb where src[ih * w + iw] > best { best = src[ih * w + iw]; at = ih * w + iw }
                                }
                                dst[at] += g[oh * wo + ow]
                            }
                        }
                    }
                }
            }
        }
    }

    /// Gradient of `avgPool2d`: each output's gradient is spread evenly over the input cells
    /// of its window, divided by the forward's divisor. → inputShape [N, C, H, W].
    public static func avgPool2dBackward(_ gradOutput: Tensor, inputShape: [Int], _ p: Pool2DConfig) -> Tensor {
        let (h, w, ho, wo) = poolGeometry(gradOutput, inputShape, p)
        let planes = inputShape[0] * inputShape[1]
        return gradOutput.withUnsafeBufferPointer { gb in
            Tensor(shape: inputShape) { dx in
                for pl in 0..<planes {
                    let dst = dx.baseAddress! + pl * h * w, g = gb.baseAddress! + pl * ho * wo
                    for oh in 0..<ho {
                        let h0 = oh * p.strideH - p.padH
                        let ha = Swift.max(h0, 0), hb = Swift.min(h0 + p.kernelH, h)
                        for ow in 0..<wo {
                            let w0 = ow * p.strideW - p.padW
                            let wa = Swift.max(w0, 0), wb = Swift.min(w0 + p.kernelW, w)
                            let divisor = p.countIncludePad
                                ? (Swift.min(h0 + p.kernelH, h + p.padH) - h0) * (Swift.min(w0 + p.kernelW, w + p.padW) - w0)
                                : (hb - ha) * (wb - wa)
                            let v = g[oh * wo + ow] / Float(divisor)
                            for ih in ha..<hb { for iw in wa..<wb { dst[ih * w + iw] += v } }
                        }
                    }
                }
            }
        }
    }

    /// Gradient of `globalAvgPool`: gradOutput [N, C] → inputShape [N, C, H, W], each plane
    /// filled with its gradient / (H·W).
    public static func globalAvgPoolBackward(_ gradOutput: Tensor, inputShape: [Int]) -> Tensor {
        precondition(inputShape.count == 4 && gradOutput.shape == Array(inputShape.prefix(2)),
                     "global average pool gradient \(gradOutput.shape) does not fit input \(inputShape)")
        let plane = inputShape[2] * inputShape[3]
        return gradOutput.withUnsafeBufferPointer { gb in
            Tensor(shape: inputShape) { dx in
                for pl in 0..<gb.count {
                    (dx.baseAddress! + pl * plane).update(repeating: gb[pl] / Float(plane), count: plane)
                }
            }
        }
    }

    static func poolGeometry(_ gradOutput: Tensor, _ inputShape: [Int], _ p: Pool2DConfig) -> (Int, Int, Int, Int) {
        precondition(inputShape.count == 4, "pooling expects [N, C, H, W], got \(inputShape)")
        let (h, w) = (inputShape[2], inputShape[3])
        let (ho, wo) = p.outputSize(h: h, w: w)
        precondition(gradOutput.shape == [inputShape[0], inputShape[1], ho, wo],
                     "pooling gradient must be [\(inputShape[0]), \(inputShape[1]), \(ho), \(wo)], got \(gradOutput.shape)")
        return (h, w, ho, wo)
    }

    /// Input gradient of `linear`: dX[N × in] = dY[N × out] · W[out × in].
    public static func linearBackwardInput(_ gradOutput: Tensor, weight: Tensor, threads: Int? = nil) -> Tensor {
        precondition(gradOutput.rank == 2 && weight.rank == 2 && gradOutput.shape[1] == weight.shape[0],
                     "linear gradient \(gradOutput.shape) does not fit weight \(weight.shape)")
        let (n, m, k) = (gradOutput.shape[0], weight.shape[0], weight.shape[1])
        var dx = Tensor(zeros: [n, k])
        gradOutput.withUnsafeBufferPointer { gb in
            weight.withUnsafeBufferPointer { wb in
                dx.withUnsafeMutableBufferPointer { db in
                    Gemm.sgemm(m: n, n: k, k: m, a: gb.baseAddress!, aRowStride: m, aColStride: 1,
                               b: wb.baseAddress!, bRowStride: k, bColStride: 1, c: db.baseAddress!, ldc: k,
                               threads: threads ?? 1)
                }
            }
        }
        return dx
    }

    /// Weight gradient of `linear`: dW[out × in] = dYᵀ · X, dYᵀ through strides.
    public static func linearBackwardWeight(_ gradOutput: Tensor, input x: Tensor, threads: Int? = nil) -> Tensor {
        precondition(gradOutput.rank == 2 && x.rank == 2 && gradOutput.shape[0] == x.shape[0],
                     "linear gradient \(gradOutput.shape) does not fit input \(x.shape)")
        let (n, m, k) = (x.shape[0], gradOutput.shape[1], x.shape[1])
        var dw = Tensor(zeros: [m, k])
        gradOutput.withUnsafeBufferPointer { gb in
            x.withUnsafeBufferPointer { xb in
                dw.withUnsafeMutableBufferPointer { db in
                    Gemm.sgemm(m: m, n: k, k: n, a: gb.baseAddress!, aRowStride: 1, aColStride: m,
                               b: xb.baseAddress!, bRowStride: k, bColStride: 1, c: db.baseAddress!, ldc: k,
                               threads: threads ?? 1)
                }
            }
        }
        return dw
    }

    /// Gradient of `resizeBilinearAlignCorners`: each output's gradient is scattered onto its
    /// four source pixels with the forward's weights. gradOutput: [N, C, outH, outW] → [N, C, H, W].
    public static func resizeBilinearAlignCornersBackward(_ gradOutput: Tensor, inputHeight h: Int,
                                                          inputWidth w: Int) -> Tensor {
        precondition(gradOutput.rank == 4 && h > 0 && w > 0, "resize gradient expects [N, C, H, W] and a positive input size")
        let (outH, outW) = (gradOutput.shape[2], gradOutput.shape[3])
        let planes = gradOutput.shape[0] * gradOutput.shape[1]
        let ys = ResizeTaps(input: h, output: outH), xs = ResizeTaps(input: w, output: outW)
        return gradOutput.withUnsafeBufferPointer { gb in
            Tensor(shape: [gradOutput.shape[0], gradOutput.shape[1], h, w]) { dx in
                for pl in 0..<planes {
                    let g = gb.baseAddress! + pl * outH * outW, dst = dx.baseAddress! + pl * h * w
                    for oy in 0..<outH {
                        let r0 = dst + ys.i0[oy] * w, r1 = dst + ys.i1[oy] * w
                        let fy = ys.frac[oy], gy = 1 - fy
                        for ox in 0..<outW {
                            let v = g[oy * outW + ox]
                            let a = xs.i0[ox], b = xs.i1[ox], fx = xs.frac[ox]
                            let top = gy * v, bottom = fy * v
                            r0[a] += (1 - fx) * top; r0[b] += fx * top
                            r1[a] += (1 - fx) * bottom; r1[b] += fx * bottom
                        }
                    }
                }
            }
        }
    }

    /// Gradient of `concatChannels`: gradOutput [N, ΣC_i, …] split back into [N, C_i, …].
    public static func concatChannelsBackward(_ gradOutput: Tensor, channels: [Int]) -> [Tensor] {
        precondition(gradOutput.rank >= 2 && channels.reduce(0, +) == gradOutput.shape[1],
                     "concat gradient \(gradOutput.shape) does not split into channels \(channels)")
        var start = 0
        return channels.map { k in
            defer { start += k }
            return sliceChannels(gradOutput, start..<(start + k))
        }
    }
}

// MARK: - Reference twins

extension Reference {
    public static func activationBackward(_ gradOutput: Tensor, input: Tensor, _ act: Activation) -> Tensor {
        gradOutput.zipMap(input) { g, x in
            switch act {
            case .identity: return g
            case .relu: return x > 0 ? g : 0
            case .relu1: return x > 0 && x < 1 ? g : 0
            case .leakyRelu1(let s): return (x < 0 || x > 1) ? s * g : g
            }
        }
    }

    /// Training-mode batch norm backward in Double, statistics recomputed from x (eps as in forward).
    public static func batchNormTrainingBackward(_ gradOutput: Tensor, input x: Tensor, gamma: Tensor,
                                                 eps: Float) -> (input: Tensor, gamma: Tensor, beta: Tensor) {
        let n = x.shape[0], c = x.shape[1], plane = x.count / (n * c)
        let xs = x.scalars.map(Double.init), gs = gradOutput.scalars.map(Double.init), gm = gamma.scalars
        let m = Double(n * plane)
        func idx(_ img: Int, _ ch: Int, _ i: Int) -> Int { (img * c + ch) * plane + i }
        var dx = [Float](repeating: 0, count: x.count), dGamma = [Float](repeating: 0, count: c), dBeta = dGamma
        for ch in 0..<c {
            var mean = 0.0
            for img in 0..<n { for i in 0..<plane { mean += xs[idx(img, ch, i)] } }
            mean /= m
            var variance = 0.0
            for img in 0..<n { for i in 0..<plane { variance += (xs[idx(img, ch, i)] - mean) * (xs[idx(img, ch, i)] - mean) } }
            let inv = 1 / (variance / m + Double(eps)).squareRoot()
            var sg = 0.0, sgx = 0.0
            for img in 0..<n { for i in 0..<plane {
                sg += gs[idx(img, ch, i)]; sgx += gs[idx(img, ch, i)] * (xs[idx(img, ch, i)] - mean) * inv
            } }
            dBeta[ch] = Float(sg); dGamma[ch] = Float(sgx)
            for img in 0..<n { for i in 0..<plane {
                let xh = (xs[idx(img, ch, i)] - mean) * inv
                dx[idx(img, ch, i)] = Float(Double(gm[ch]) * inv * (gs[idx(img, ch, i)] - sg / m - xh * sgx / m))
            } }
        }
        return (Tensor(shape: x.shape, scalars: dx), Tensor(shape: [c], scalars: dGamma), Tensor(shape: [c], scalars: dBeta))
    }

    public static func maxPool2dBackward(_ gradOutput: Tensor, input x: Tensor, _ p: Pool2DConfig) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        let (ho, wo) = p.outputSize(h: h, w: w)
        var dx = Tensor(zeros: x.shape)
        for b in 0..<n { for ch in 0..<c { for oh in 0..<ho { for ow in 0..<wo {
            var best = -Float.infinity, at = (-1, -1)
            for ki in 0..<p.kernelH { for kj in 0..<p.kernelW {
                let ih = oh * p.strideH - p.padH + ki, iw = ow * p.strideW - p.padW + kj
                guard ih >= 0, ih < h, iw >= 0, iw < w else { continue }
                if at.0 < 0 || x[b, ch, ih, iw] > best { best = x[b, ch, ih, iw]; at = (ih, iw) }
            } }
            dx[b, ch, at.0, at.1] += gradOutput[b, ch, oh, ow]
        } } } }
        return dx
    }

    public static func avgPool2dBackward(_ gradOutput: Tensor, inputShape: [Int], _ p: Pool2DConfig) -> Tensor {
        let (n, c, h, w) = (inputShape[0], inputShape[1], inputShape[2], inputShape[3])
        let (ho, wo) = p.outputSize(h: h, w: w)
        var acc = [Double](repeating: 0, count: n * c * h * w)
        for b in 0..<n { for ch in 0..<c { for oh in 0..<ho { for ow in 0..<wo {
            var cells: [(Int, Int)] = []
            for ki in 0..<p.kernelH { for kj in 0..<p.kernelW {
                let ih = oh * p.strideH - p.padH + ki, iw = ow * p.strideW - p.padW + kj
                if ih >= 0 && ih < h && iw >= 0 && iw < w { cells.append((ih, iw)) }
            } }
            let hEnd = Swift.min(oh * p.strideH - p.padH + p.kernelH, h + p.padH)
            let wEnd = Swift.min(ow * p.strideW - p.padW + p.kernelW, w + p.padW)
            let divisor = p.countIncludePad
                ? (hEnd - (oh * p.strideH - p.padH)) * (wEnd - (ow * p.strideW - p.padW)) : cells.count
            for (ih, iw) in cells {
                acc[((b * c + ch) * h + ih) * w + iw] += Double(gradOutput[b, ch, oh, ow]) / Double(divisor)
            }
        } } } }
        return Tensor(shape: inputShape, scalars: acc.map(Float.init))
    }

    public static func globalAvgPoolBackward(_ gradOutput: Tensor, inputShape: [Int]) -> Tensor {
        let plane = inputShape[2] * inputShape[3]
        let gs = gradOutput.scalars
        return Tensor(shape: inputShape, scalars: (0..<Tensor.count(of: inputShape)).map { gs[$0 / plane] / Float(plane) })
    }

    public static func linearBackwardInput(_ gradOutput: Tensor, weight: Tensor) -> Tensor {
        let (n, m, k) = (gradOutput.shape[0], weight.shape[0], weight.shape[1])
        var dx = Tensor(zeros: [n, k])
        for r in 0..<n { for j in 0..<k {
            var s = 0.0
            for o in 0..<m { s += Double(gradOutput[r, o]) * Double(weight[o, j]) }
            dx[r, j] = Float(s)
        } }
        return dx
    }

    public static func linearBackwardWeight(_ gradOutput: Tensor, input x: Tensor) -> Tensor {
        let (n, m, k) = (x.shape[0], gradOutput.shape[1], x.shape[1])
        var dw = Tensor(zeros: [m, k])
        for o in 0..<m { for j in 0..<k {
            var s = 0.0
            for r in 0..<n { s += Double(gradOutput[r, o]) * Double(x[r, j]) }
            dw[o, j] = Float(s)
        } }
        return dw
    }

    /// Scatter with source coordinates computed in Double (oracle for the fast backward).
    public static func resizeBilinearAlignCornersBackward(_ gradOutput: Tensor, inputHeight h: Int,
                                                          inputWidth w: Int) -> Tensor {
        let (n, c, outH, outW) = (gradOutput.shape[0], gradOutput.shape[1], gradOutput.shape[2], gradOutput.shape[3])
        var acc = [Double](repeating: 0, count: n * c * h * w)
        func src(_ j: Int, _ inSize: Int, _ outSize: Int) -> Double {
            outSize > 1 ? Double(j) * Double(inSize - 1) / Double(outSize - 1) : 0
        }
        for b in 0..<n { for ch in 0..<c { for oy in 0..<outH { for ox in 0..<outW {
            let sy = src(oy, h, outH), sx = src(ox, w, outW)
            let y0 = Int(sy.rounded(.down)), x0 = Int(sx.rounded(.down))
            let y1 = Swift.min(y0 + 1, h - 1), x1 = Swift.min(x0 + 1, w - 1)
            let fy = sy - Double(y0), fx = sx - Double(x0)
            let g = Double(gradOutput[b, ch, oy, ox])
            let base = (b * c + ch) * h * w
            acc[base + y0 * w + x0] += (1 - fy) * (1 - fx) * g
            acc[base + y0 * w + x1] += (1 - fy) * fx * g
            acc[base + y1 * w + x0] += fy * (1 - fx) * g
            acc[base + y1 * w + x1] += fy * fx * g
        } } } }
        return Tensor(shape: [n, c, h, w], scalars: acc.map(Float.init))
    }
}
