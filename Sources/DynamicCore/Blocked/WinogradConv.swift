import Foundation

// Winograd F(2×2, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
// CVPR 2016) for 3×3 stride-1 pad-1 convolutions on NCHW8c buffers: each 2×2 output tile is
// Aᵀ[(G g Gᵀ) ⊙ (Bᵀ d B)]A, 16 multiplies per input channel instead of 36. Per block of tiles:
// the inputs are transformed into V[ξ][tile][c], 16 GEMMs M_ξ = V_ξ·U_ξ run on the 16-lane
// microkernels, and the outputs are transformed back and stored through the forward kernels'
// epilogue (bias, residual, clamp, `ConvMoments`), so batch-norm sums ride along as before.

/// Bᵀ applied to (d0, d1, d2, d3): the input transform along one axis.
@inline(__always)
private func bt(_ d0: SIMD16<Float>, _ d1: SIMD16<Float>, _ d2: SIMD16<Float>, _ d3: SIMD16<Float>)
    -> (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>) {
    (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
}

/// Aᵀ applied to (m0, m1, m2, m3): the output transform along one axis.
@inline(__always)
private func at(_ m0: SIMD16<Float>, _ m1: SIMD16<Float>, _ m2: SIMD16<Float>, _ m3: SIMD16<Float>)
    -> (SIMD16<Float>, SIMD16<Float>) {
    (m0 + m1 + m2, m1 - m2 - m3)
}

@inline(__always)
private func storeRow(_ v: (SIMD16<Float>, SIMD16<Float>, SIMD16<Float>, SIMD16<Float>), _ p: UnsafeMutablePointer<Float>,
                      _ step: Int) {
    store16(v.0, p); store16(v.1, p + step); store16(v.2, p + 2 * step); store16(v.3, p + 3 * step)
}

extension BlockedConv2D {
    /// Whether a run of `c` with this output size takes the Winograd route.
    static func usesWinograd(_ c: Conv2DConfig, usesIm2col: Bool, outputHeight: Int, outputWidth: Int,
                             options: KernelOptions) -> Bool {
        options.winograd && options.width == .simd16 && winogradSupports(c, usesIm2col: usesIm2col)
            && outputHeight % 2 == 0 && outputWidth % 2 == 0
    }

    /// Whether the configuration can take the Winograd route (the shapes are checked per run).
    static func winogradSupports(_ c: Conv2DConfig, usesIm2col: Bool) -> Bool {
        !usesIm2col && c.kernelH == 3 && c.kernelW == 3 && c.strideH == 1 && c.strideW == 1 && c.padH == 1
            && c.padW == 1 && c.dilationH == 1 && c.dilationW == 1 && c.groups == 1
            && winogradChannels.contains(c.inChannels) && c.outChannels % 16 == 0
    }

    /// U[ξ][c][k] = (G g Gᵀ)[ξ] from the packed weights (either packing), K = outChannels.
    /// Training re-packs every step: no temporaries per weight.
    func packWinograd(into u: UnsafeMutablePointer<Float>) {
        let c = config, panel = reductionBlocks * taps * lanes * 16
        let (cin, cout) = (c.inChannels, c.outChannels), plane = cin * cout
        for oc in 0..<cout {
            let src = packed + (oc / 16) * panel + oc % 16
            for ic in 0..<cin {
                let w = src + ((ic / 8) * taps * 8 + ic % 8) * 16
                let dst = u + ic * cout + oc
                // Row i of t = G g (4×3), then row i of U = t Gᵀ.
                @inline(__always) func store(_ i: Int, _ t0: Float, _ t1: Float, _ t2: Float) {
                    let q = dst + 4 * i * plane
                    q[0] = t0; q[plane] = 0.5 * (t0 + t1 + t2); q[2 * plane] = 0.5 * (t0 - t1 + t2); q[3 * plane] = t2
                }
                let (g00, g01, g02) = (w[0], w[128], w[256])
                let (g10, g11, g12) = (w[384], w[512], w[640])
                let (g20, g21, g22) = (w[768], w[896], w[1024])
                store(0, g00, g01, g02)
                store(1, 0.5 * (g00 + g10 + g20), 0.5 * (g01 + g11 + g21), 0.5 * (g02 + g12 + g22))
                store(2, 0.5 * (g00 - g10 + g20), 0.5 * (g01 - g11 + g21), 0.5 * (g02 - g12 + g22))
                store(3, g20, g21, g22)
            }
        }
    }

    /// `run` on the Winograd route: no placement, input halo ≥ 1, even output height and width.
    func runWinograd(_ input: BlockedBuffer, images: [Int]?, into output: BlockedBuffer, residual: BlockedBuffer?, activation: Activation,
                     threads: Int?, moments: ConvMoments?, u: UnsafePointer<Float>) {
        let c = config, si = input.shape, so = output.shape
        let (cin, cout) = (c.inChannels, c.outChannels)
        let tT = Self.winogradTiles
        let (tilesY, tilesX) = (so.h / 2, so.w / 2)
        let perImage = tilesY * tilesX, tiles = so.n * perImage
        let groups = (tiles + tT - 1) / tT
        let threads = Swift.max(1, threads ?? Parallel.defaultThreads)
        let chunk = ConvMoments.align(Swift.max(1, threads == 1 ? groups : groups / (8 * threads)), moments)
        let chunks = (groups + chunk - 1) / chunk
        let stats = moments?.begin(tiles: groups, pairs: pairs, output: so)
        let (x, y, r) = (UnsafePointer(input.pointer), output.pointer, residual.map { UnsafePointer($0.pointer) })
        let (lo, hi) = Self.clampBounds(activation)
        let outBlocks = so.blocks
        let inputImage = images ?? Array(0..<so.n)
        Parallel.forEach(chunks, threads: threads) { ci in
            let vBuf = UnsafeMutablePointer<Float>.allocate(capacity: 16 * tT * cin)
            let mBuf = UnsafeMutablePointer<Float>.allocate(capacity: 16 * tT * cout)
            defer { vBuf.deallocate(); mBuf.deallocate() }
            var outOffsets = [Int](repeating: 0, count: tT)
            for g in (ci * chunk)..<Swift.min(groups, (ci + 1) * chunk) {
                let t0 = g * tT, nT = Swift.min(tT, tiles - t0)
                // A last, partial block: the GEMMs also read the missing tiles' rows, zero them.
                if nT < tT { for xi in 0..<16 { (vBuf + (xi * tT + nT) * cin).initialize(repeating: 0, count: (tT - nT) * cin) } }
                // Input transform: V = Bᵀ d B per tile and 16 channels.
                for i in 0..<nT {
                    let t = t0 + i
                    let n = t / perImage, ty = (t % perImage) / tilesX, tx = t % tilesX
                    outOffsets[i] = n * so.imageStride + so.pixelOffset(2 * ty, 2 * tx)
                    let origin = x + inputImage[n] * si.imageStride + si.pixelOffset(2 * ty - 1, 2 * tx - 1)
                    for cp in 0..<(cin / 16) {
                        let o = origin + 2 * cp * si.blockStride
                        let row = si.wp * 8
                        @inline(__always) func d(_ a: Int, _ b: Int) -> SIMD16<Float> { load8x2(o + a * row + b * 8, si.blockStride) }
                        let v = vBuf + i * cin + 16 * cp
                        // Bᵀ d (rows), then (Bᵀ d) B (columns): V[a][b] at v + (4a + b)·T·Cin.
                        let c0 = bt(d(0, 0), d(1, 0), d(2, 0), d(3, 0)), c1 = bt(d(0, 1), d(1, 1), d(2, 1), d(3, 1))
                        let c2 = bt(d(0, 2), d(1, 2), d(2, 2), d(3, 2)), c3 = bt(d(0, 3), d(1, 3), d(2, 3), d(3, 3))
                        let step = tT * cin
                        storeRow(bt(c0.0, c1.0, c2.0, c3.0), v, step)
                        storeRow(bt(c0.1, c1.1, c2.1, c3.1), v + 4 * step, step)
                        storeRow(bt(c0.2, c1.2, c2.2, c3.2), v + 8 * step, step)
                        storeRow(bt(c0.3, c1.3, c2.3, c3.3), v + 12 * step, step)
                    }
                }
                // 16 GEMMs.
                for xi in 0..<16 {
                    let vx = UnsafePointer(vBuf + xi * tT * cin), ux = u + xi * cin * cout, mx = mBuf + xi * tT * cout
                    var k = 0
                    while k + 32 <= cout {
                        Self.winogradGemm(cin, true, vx, ux + k, cout, mx + k, cout)
                        k += 32
                    }
                    if k < cout { Self.winogradGemm(cin, false, vx, ux + k, cout, mx + k, cout) }
                }
                // Output transform Aᵀ M A and the epilogue, pair by pair.
                for j in 0..<pairs {
                    let off = 2 * j * so.blockStride
                    let sj = stats?.at(tile: g, pair: j, pairs: pairs, offset: off)
                    var ep = Epilogue16(bias: bias + 16 * j, residual: r.map { $0 + off }, y: y + off, pixOut: nil,
                                        blockStride: so.blockStride, blocks: Swift.min(2, outBlocks - 2 * j), lo: lo, hi: hi,
                                        stats: sj)
                    for i in 0..<nT {
                        let m = UnsafePointer(mBuf + i * cout + 16 * j)
                        @inline(__always) func mm(_ a: Int, _ b: Int) -> SIMD16<Float> { load16(m + (a * 4 + b) * tT * cout) }
                        // Aᵀ m (rows), then A on the columns.
                        let r0 = at(mm(0, 0), mm(1, 0), mm(2, 0), mm(3, 0)), r1 = at(mm(0, 1), mm(1, 1), mm(2, 1), mm(3, 1))
                        let r2 = at(mm(0, 2), mm(1, 2), mm(2, 2), mm(3, 2)), r3 = at(mm(0, 3), mm(1, 3), mm(2, 3), mm(3, 3))
                        let top = at(r0.0, r1.0, r2.0, r3.0), bottom = at(r0.1, r1.1, r2.1, r3.1)
                        let o = outOffsets[i], rowStep = so.wp * 8
                        ep.store(at: o, top.0)
                        ep.store(at: o + 8, top.1)
                        ep.store(at: o + rowStep, bottom.0)
                        ep.store(at: o + rowStep + 8, bottom.1)
                    }
                    ep.finish()
                }
            }
        }
    }
}
