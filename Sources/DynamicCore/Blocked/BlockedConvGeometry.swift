import DynamicShims
import Foundation

// Pixel and tap offsets of `BlockedConv2D` per input/output shape, and the im2col route's columns.
extension BlockedConv2D {

    struct Geometry {
        var input: BlockedShape, output: BlockedShape
        var pixels: Int
        var pixIn: UnsafeMutablePointer<Int>, pixOut: UnsafeMutablePointer<Int>
        /// Offsets of the kernel taps inside an input block.
        var taps: UnsafeMutablePointer<Int>
    }

    struct GeometryKey: Hashable { var input: BlockedShape, output: BlockedShape, placement: OutputPlacement? }

    /// Offsets of every output pixel of every image (input window origin and output position,
    /// in floats from the buffer start), padded to whole tiles by repeating the last pixel.
    func geometryFor(input si: BlockedShape, output so: BlockedShape,
                             placement: OutputPlacement? = nil) -> Geometry {
        geometryLock.lock()
        defer { geometryLock.unlock() }
        let key = GeometryKey(input: si, output: so, placement: placement)
        if let g = geometries[key] { return g }
        let c = config
        let p = placement ?? OutputPlacement(height: so.h, width: so.w, strideH: 1, strideW: 1, offsetY: 0, offsetX: 0)
        let perImage = p.height * p.width, pixels = so.n * perImage
        let padded = (pixels + Self.pixelPadding - 1) / Self.pixelPadding * Self.pixelPadding
        let pin = UnsafeMutablePointer<Int>.allocate(capacity: padded)
        let pout = UnsafeMutablePointer<Int>.allocate(capacity: padded)
        for i in 0..<padded {
            let q = Swift.min(i, pixels - 1)
            let n = q / perImage, oy = (q % perImage) / p.width, ox = q % p.width
            pin[i] = n * si.imageStride + si.pixelOffset(oy * c.strideH - c.padH, ox * c.strideW - c.padW)
            pout[i] = n * so.imageStride + so.pixelOffset(oy * p.strideH + p.offsetY, ox * p.strideW + p.offsetX)
        }
        let kk = c.kernelH * c.kernelW
        let taps = UnsafeMutablePointer<Int>.allocate(capacity: kk)
        for ki in 0..<c.kernelH {
            for kj in 0..<c.kernelW { taps[ki * c.kernelW + kj] = (ki * c.dilationH * si.wp + kj * c.dilationW) * 8 }
        }
        let g = Geometry(input: si, output: so, pixels: pixels, pixIn: pin, pixOut: pout, taps: taps)
        geometries[key] = g
        return g
    }

    /// Pixel-major im2col: col[p·K + (ci·kh + ky)·kw + kx], K = Cin·kh·kw, zero outside the image.
    /// Each input row is first copied into a zero-bordered line so the inner loop has no bounds checks.
    static func im2col(_ c: Conv2DConfig, _ x: UnsafePointer<Float>, _ h: Int, _ w: Int, _ so: BlockedShape,
                       _ col: UnsafeMutablePointer<Float>) {
        let kk = c.kernelH * c.kernelW, kDim = c.inChannels * kk
        let lineCount = (so.w - 1) * c.strideW + (c.kernelW - 1) * c.dilationW + 1
        let line = UnsafeMutablePointer<Float>.allocate(capacity: Swift.max(lineCount, w + c.padW))
        defer { line.deallocate() }
        line.initialize(repeating: 0, count: Swift.max(lineCount, w + c.padW))
        let copyCount = Swift.max(0, Swift.min(w, lineCount - c.padW))
        for oy in 0..<so.h {
            let rowCol = col + oy * so.w * kDim
            for ic in 0..<c.inChannels {
                for ki in 0..<c.kernelH {
                    let iy = oy * c.strideH - c.padH + ki * c.dilationH
                    let base = rowCol + ic * kk + ki * c.kernelW
                    if iy < 0 || iy >= h {
                        for ox in 0..<so.w { for kj in 0..<c.kernelW { base[ox * kDim + kj] = 0 } }
                        continue
                    }
                    (line + c.padW).update(from: x + (ic * h + iy) * w, count: copyCount)
                    if c.kernelW == 3 && c.dilationW == 1 {
                        // The common stem: three neighbours, no inner loop.
                        let s = c.strideW
                        for ox in 0..<so.w {
                            let src = line + ox * s, d = base + ox * kDim
                            d[0] = src[0]; d[1] = src[1]; d[2] = src[2]
                        }
                    } else {
                        for ox in 0..<so.w {
                            let src = line + ox * c.strideW, d = base + ox * kDim
                            for kj in 0..<c.kernelW { d[kj] = src[kj * c.dilationW] }
                        }
                    }
                }
            }
        }
    }

}
