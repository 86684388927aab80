import DynamicShims
import Foundation

// What every `BlockedConv2D` kernel does with its accumulators: bias, residual, clamp, store, and
// the batch-norm sums of `ConvMoments`.
extension BlockedConv2D {
    static func clampBounds(_ a: Activation) -> (Float, Float) {
        switch a {
        case .identity: return (-.infinity, .infinity)
        case .relu: return (0, .infinity)
        case .relu1: return (0, 1)
        case .leakyRelu1: preconditionFailure("leaky ReLU-1 is not fused into blocked convolutions")
        }
    }

    /// `Epilogue16` for the row kernels: pixel i lands at `out + i·outStep`.
    struct RowEpilogue16 {
        var e: Epilogue16
        let out: Int, outStep: Int

        @inline(__always)
        init(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, out: Int,
             outStep: Int, blockStride: Int, blocks: Int, lo: Float, hi: Float, stats: EpilogueSums?) {
            e = Epilogue16(bias: bias, residual: residual, y: y, pixOut: nil, blockStride: blockStride, blocks: blocks,
                           lo: lo, hi: hi, stats: stats)
            (self.out, self.outStep) = (out, outStep)
        }

        @_transparent
        mutating func store(_ i: Int, _ v: SIMD16<Float>) { e.store(at: out + i * outStep, v) }

        @_transparent
        func finish() { e.finish() }
    }

    /// Bias, residual, clamp and store of one pixel's 16 channels held in one 16-lane vector:
    /// the low half goes to the first 8-channel block, the high half `blockStride` floats on.
    /// With `stats`, the sums of `ConvMoments` are kept and added to its slot by `finish()`.
    struct Epilogue16 {
        let b: SIMD16<Float>, lo: SIMD16<Float>, hi: SIMD16<Float>
        let residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, pixOut: UnsafePointer<Int>?
        let blockStride: Int, blocks: Int
        let stats: EpilogueSums?
        /// Recomputed ReLU mask: z·maskScale + maskShift > 0.
        let maskScale: SIMD16<Float>, maskShift: SIMD16<Float>
        var sum = SIMD16<Float>(), squares = SIMD16<Float>()

        /// `blocks`: how many of the two 8-channel blocks exist (≤ 0: none, nothing is stored).
        @inline(__always)
        init(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
             pixOut: UnsafePointer<Int>?, blockStride: Int, blocks: Int, lo: Float, hi: Float,
             stats: EpilogueSums?) {
            b = blocks > 0 ? load16(bias) : SIMD16()
            self.lo = SIMD16(repeating: lo); self.hi = SIMD16(repeating: hi)
            (self.residual, self.y, self.pixOut, self.blockStride, self.blocks) = (residual, y, pixOut, blockStride, blocks)
            self.stats = blocks > 0 ? stats : nil
            maskScale = stats?.maskScale.map { load16($0) } ?? SIMD16()
            maskShift = stats?.maskShift.map { load16($0) } ?? SIMD16()
        }

        /// Pixel i of the pixel table.
        @_transparent
        mutating func store(_ i: Int, _ v: SIMD16<Float>) { store(at: pixOut.unsafelyUnwrapped[i], v) }

        /// The one or two 8-channel blocks at offset o of p.
        @_transparent
        func load(_ p: UnsafePointer<Float>, _ o: Int) -> SIMD16<Float> {
            blocks > 1 ? load8x2(p + o, blockStride) : SIMD16(lowHalf: load8(p + o), highHalf: SIMD8())
        }

        /// The pixel at offset o.
        @_transparent
        mutating func store(at o: Int, _ v: SIMD16<Float>) {
            if blocks <= 0 { return }
            var a = v + b
            if let r = residual { a += load(r, o) }
            a = vmin(vmax(a, lo), hi)
            if let stats {
                if let z = stats.z {
                    let zv = load(z, o)
                    if let m = stats.reluOutput {
                        a = a.replacing(with: 0, where: load(m, o) .<= 0)
                    } else if stats.maskScale != nil {
                        a = a.replacing(with: 0, where: fmadd(maskShift, zv, maskScale) .<= 0)
                    }
                    sum += a
                    squares = fmadd(squares, a, zv)
                } else {
                    sum += a
                    squares = fmadd(squares, a, a)
                }
            }
            store8(a.lowHalf, y + o)
            if blocks > 1 { store8(a.highHalf, y + o + blockStride) }
        }

        @_transparent
        func finish() {
            guard let slot = stats?.slot else { return }
            store16(load16(slot) + sum, slot)
            store16(load16(slot + 16) + squares, slot + 16)
        }
    }

    /// Bias, residual, clamp and store of one pixel's 16 accumulated channels; with `stats`, the
    /// sums of `ConvMoments` as in `Epilogue16`. Kept apart from `Epilogue16` on purpose: the
    /// 8-lane kernel built on the 16-lane epilogue measured 2–8 % slower (batch 16, one thread).
    struct Epilogue {
        let b0: SIMD8<Float>, b1: SIMD8<Float>, lo: SIMD8<Float>, hi: SIMD8<Float>
        let residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>, pixOut: UnsafePointer<Int>
        let blockStride: Int, twoBlocks: Bool
        let stats: EpilogueSums?
        let scale0: SIMD8<Float>, scale1: SIMD8<Float>, shift0: SIMD8<Float>, shift1: SIMD8<Float>
        var s0 = SIMD8<Float>(), s1 = SIMD8<Float>(), q0 = SIMD8<Float>(), q1 = SIMD8<Float>()

        @inline(__always)
        init(bias: UnsafePointer<Float>, residual: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>,
             pixOut: UnsafePointer<Int>, blockStride: Int, twoBlocks: Bool, lo: Float, hi: Float,
             stats: EpilogueSums?) {
            b0 = load8(bias); b1 = load8(bias + 8)
            self.lo = SIMD8(repeating: lo); self.hi = SIMD8(repeating: hi)
            (self.residual, self.y, self.pixOut, self.blockStride, self.twoBlocks) = (residual, y, pixOut, blockStride, twoBlocks)
            self.stats = stats
            scale0 = stats?.maskScale.map { load8($0) } ?? SIMD8(); scale1 = stats?.maskScale.map { load8($0 + 8) } ?? SIMD8()
            shift0 = stats?.maskShift.map { load8($0) } ?? SIMD8(); shift1 = stats?.maskShift.map { load8($0 + 8) } ?? SIMD8()
        }

        @_transparent
        mutating func store(_ i: Int, _ v0: SIMD8<Float>, _ v1: SIMD8<Float>) {
            let o = pixOut[i]
            var a = v0 + b0, b = v1 + b1
            if let r = residual {
                a += load8(r + o)
                if twoBlocks { b += load8(r + o + blockStride) }
            }
            a = vmin(vmax(a, lo), hi)
            b = vmin(vmax(b, lo), hi)
            if let stats {
                if let z = stats.z {
                    let z0 = load8(z + o), z1 = twoBlocks ? load8(z + o + blockStride) : SIMD8()
                    if let m = stats.reluOutput {
                        a = a.replacing(with: 0, where: load8(m + o) .<= 0)
                        if twoBlocks { b = b.replacing(with: 0, where: load8(m + o + blockStride) .<= 0) }
                    } else if stats.maskScale != nil {
                        a = a.replacing(with: 0, where: fmadd(shift0, z0, scale0) .<= 0)
                        b = b.replacing(with: 0, where: fmadd(shift1, z1, scale1) .<= 0)
                    }
                    s0 += a; q0 = fmadd(q0, a, z0)
                    s1 += b; q1 = fmadd(q1, b, z1)
                } else {
                    s0 += a; q0 = fmadd(q0, a, a)
                    s1 += b; q1 = fmadd(q1, b, b)
                }
            }
            store8(a, y + o)
            if twoBlocks { store8(b, y + o + blockStride) }
        }

        @_transparent
        func finish() {
            guard let slot = stats?.slot else { return }
            store16(load16(slot) + SIMD16(lowHalf: s0, highHalf: s1), slot)
            store16(load16(slot + 16) + SIMD16(lowHalf: q0, highHalf: q1), slot + 16)
        }
    }
}
