extension Ops {
    /// Bilinear resize with `align_corners=True` (RANet's fusion, up- and down-sampling):
    /// x: [N, C, H, W] → [N, C, outH, outW]. Corner pixels map to corner pixels; source
    /// coordinate = dst·(in − 1)/(out − 1), or 0 when out = 1 (PyTorch's rule).
    public static func resizeBilinearAlignCorners(_ x: Tensor, height outH: Int, width outW: Int) -> Tensor {
        precondition(x.rank == 4 && outH > 0 && outW > 0, "resize expects [N, C, H, W] and positive size")
        let (h, w) = (x.shape[2], x.shape[3])
        let planes = x.shape[0] * x.shape[1]
        let ys = ResizeTaps(input: h, output: outH), xs = ResizeTaps(input: w, output: outW)
        return x.withUnsafeBufferPointer { xb in
            Tensor(shape: [x.shape[0], x.shape[1], outH, outW]) { yb in
                for pl in 0..<planes {
                    let src = xb.baseAddress! + pl * h * w, dst = yb.baseAddress! + pl * outH * outW
                    for oy in 0..<outH {
                        let r0 = src + ys.i0[oy] * w, r1 = src + ys.i1[oy] * w
                        let fy = ys.frac[oy], gy = 1 - fy
                        let d = dst + oy * outW
                        for ox in 0..<outW {
                            let a = xs.i0[ox], b = xs.i1[ox], fx = xs.frac[ox]
                            let top = (1 - fx) * r0[a] + fx * r0[b]
                            let bottom = (1 - fx) * r1[a] + fx * r1[b]
                            d[ox] = gy * top + fy * bottom
                        }
                    }
                }
            }
        }
    }
}

/// Source taps of a 1-D align-corners linear resize: dst j reads i0[j] and i1[j] with weight frac[j] on i1.
struct ResizeTaps {
    var i0: [Int], i1: [Int], frac: [Float]
    init(input: Int, output: Int) {
        // PyTorch computes the scale in Float for float tensors: (in − 1)/(out − 1).
        let scale: Float = output > 1 ? Float(input - 1) / Float(output - 1) : 0
        i0 = []; i1 = []; frac = []
        for j in 0..<output {
            let s = scale * Float(j)
            let a = Swift.min(Int(s), input - 1)
            i0.append(a)
            i1.append(Swift.min(a + 1, input - 1))
            frac.append(Swift.min(Swift.max(s - Float(a), 0), 1))
        }
    }
}

extension Reference {
    public static func resizeBilinearAlignCorners(_ x: Tensor, height outH: Int, width outW: Int) -> Tensor {
        let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
        var y = Tensor(zeros: [n, c, outH, outW])
        func src(_ j: Int, _ inSize: Int, _ outSize: Int) -> Double {
            outSize > 1 ? Double(j) * Double(inSize - 1) / Double(outSize - 1) : 0
        }
        for b in 0..<n { for ch in 0..<c { for oy in 0..<outH { for ox in 0..<outW {
            let sy = src(oy, h, outH), sx = src(ox, w, outW)
            let y0 = Int(sy.rounded(.down)), x0 = Int(sx.rounded(.down))
            let y1 = Swift.min(y0 + 1, h - 1), x1 = Swift.min(x0 + 1, w - 1)
            let fy = sy - Double(y0), fx = sx - Double(x0)
            let v = (1 - fy) * ((1 - fx) * Double(x[b, ch, y0, x0]) + fx * Double(x[b, ch, y0, x1]))
                + fy * ((1 - fx) * Double(x[b, ch, y1, x0]) + fx * Double(x[b, ch, y1, x1]))
            y[b, ch, oy, ox] = Float(v)
        } } } }
        return y
    }
}
