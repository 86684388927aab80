#!/usr/bin/env python3
"""Writes the 16-lane (AVX-512 zmm) microkernels of the NCHW8c convolutions:
Sources/DynamicCore/Blocked/WideConvKernels.swift (forward / input gradient) and
Sources/DynamicCore/Blocked/WideConvWeightGradientKernels.swift (weight gradient).
Their bodies are a dozen near-identical lines per accumulator; writing them out by hand would
be hundreds of lines to keep in step. Usage: python3 scripts/generate_wide_kernels.py
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# Output folder: the generated-kernels folder, or the one given as the first argument (the
# drift test, GeneratedKernelsTests, writes to a temporary folder and compares).
BLOCKED = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "Sources", "DynamicCore", "Blocked", "Generated")


def conv(P, two, split):
    """P pixels × (32 if two else 16) output channels. `split`: even and odd input channels feed
    two accumulator sets (added at the end), so a 16-channel tile still has 2·P independent FMA
    chains. Every pixel keeps its own pointer; P = 8 keeps them all in general registers."""
    ch = 32 if two else 16
    name = f"conv{P}x{ch}"
    sets = [("a", "w0"), ("b", "w1")] if two else [("a", "w0")]
    L = []
    w = L.append
    nacc = P * (2 if two or split else 1)
    w(f"    /// {P} pixels × {ch} output channels on 16-lane vectors ({nacc} accumulators"
      + (", even and odd input channels apart" if split else "") + ").")
    w("    /// Same contract as `conv6x16`; `w` is the first pair's panel" + (", the second pair's is `panel` floats on;" if two else ";"))
    w("    /// `outBlocks` (1…" + ("4" if two else "2") + ") of the tile's 8-channel output blocks exist. `stats`: the epilogue sums")
    w("    /// of `ConvMoments` (Σ and Σ² of the stored values, or a batch norm's gradient sums)" + (", for both pairs" if two else "") + ".")
    w("    @inline(never)")
    w(f"    static func {name}(_ x: UnsafePointer<Float>, _ pixIn: UnsafePointer<Int>, _ taps: UnsafePointer<Int>,")
    w("                         _ nTaps: Int, _ lanes: Int, _ blocks: Int, _ cbStride: Int, _ w: UnsafePointer<Float>,")
    w("                         _ panel: Int, _ y: UnsafeMutablePointer<Float>, _ pixOut: UnsafePointer<Int>,")
    w("                         _ outBlockStride: Int, _ nPix: Int, _ outBlocks: Int, _ bias: UnsafePointer<Float>,")
    w("                         _ residual: UnsafePointer<Float>?, _ lo: Float, _ hi: Float,")
    w("                         _ stats: EpilogueSums?) {")
    accs = [f"a{i}" for i in range(P)] + ([f"b{i}" for i in range(P)] if two or split else [])
    for i in range(0, len(accs), 8):
        w("        var " + ", ".join(f"{a} = SIMD16<Float>()" for a in accs[i:i + 8]))
    for i in range(0, P, 8):
        w("        let " + ", ".join(f"x{j} = x + pixIn[{j}]" for j in range(i, min(P, i + 8))))
    w("        var wp = w")
    w("        var cbOff = 0")
    w("        for _ in 0..<blocks {")
    w("            for t in 0..<nTaps {")
    w("                let o = cbOff + taps[t]")
    for i in range(0, P, 8):
        w("                let " + ", ".join(f"p{j} = x{j} + o" for j in range(i, min(P, i + 8))))
    if split:
        w("                var ci = 0")
        w("                while ci + 1 < lanes {")
        w("                    let w0 = load16(wp), w1 = load16(wp + 16)")
        for j in range(P):
            w(f"                    a{j} = fmadd(a{j}, SIMD16(repeating: p{j}[ci]), w0); "
              f"b{j} = fmadd(b{j}, SIMD16(repeating: p{j}[ci + 1]), w1)")
        w("                    wp += 32")
        w("                    ci += 2")
        w("                }")
        w("                if ci < lanes {")
        w("                    let w0 = load16(wp)")
        for j in range(P):
            w(f"                    a{j} = fmadd(a{j}, SIMD16(repeating: p{j}[ci]), w0)")
        w("                    wp += 16")
        w("                }")
    else:
        w("                for ci in 0..<lanes {")
        w("                    let w0 = load16(wp)" + ("; let w1 = load16(wp + panel)" if two else ""))
        w("                    var v: SIMD16<Float>")
        for j in range(P):
            w(f"                    v = SIMD16(repeating: p{j}[ci]); a{j} = fmadd(a{j}, v, w0)"
              + (f"; b{j} = fmadd(b{j}, v, w1)" if two else ""))
        w("                    wp += 16")
        w("                }")
    w("            }")
    w("            cbOff += cbStride")
    w("        }")
    w("        var e0 = Epilogue16(bias: bias, residual: residual, y: y, pixOut: pixOut, blockStride: outBlockStride,")
    w("                            blocks: Swift.min(outBlocks, 2), lo: lo, hi: hi, stats: stats)")
    if two:
        w("        var e1 = Epilogue16(bias: bias + 16, residual: residual.map { $0 + 2 * outBlockStride }, y: y + 2 * outBlockStride,")
        w("                            pixOut: pixOut, blockStride: outBlockStride, blocks: outBlocks - 2, lo: lo, hi: hi,")
        w("                            stats: stats?.nextPair(blockStride: outBlockStride))")
    for j in range(P):
        if two:
            body = f"e0.store({j}, a{j}); e1.store({j}, b{j})"
        elif split:
            body = f"e0.store({j}, a{j} + b{j})"
        else:
            body = f"e0.store({j}, a{j})"
        w(f"        if nPix > {j} {{ {body} }}" if j else f"        {body}")
    w("        e0.finish()" + ("; e1.finish()" if two else ""))
    w("    }")
    return "\n".join(L)


def wgrad(R, two):
    """Weight-gradient tile: R reduction rows × 32 (or 16) output channels."""
    ch = 32 if two else 16
    name = f"tile{R}x{ch}"
    L = []
    w = L.append
    w(f"    /// acc[{R}][{ch}] += Σ over the pixels of `rowCount` output rows × `width` of broadcast(x[window + rows[i]])")
    w("    /// · dY channels: blocks at dy, dy + o1" + (", dy + o2, dy + o3" if two else "")
      + " (a missing block repeats an existing one; its sums are never read).")
    w("    @inline(never)")
    w(f"    static func {name}(_ x: UnsafePointer<Float>, _ rows: UnsafePointer<Int>, _ dy: UnsafePointer<Float>,")
    w("                          _ o1: Int, _ o2: Int, _ o3: Int, _ rowIn: UnsafePointer<Int>, _ rowOut: UnsafePointer<Int>,")
    w("                          _ rowCount: Int, _ width: Int, _ xStep: Int, _ acc: UnsafeMutablePointer<Float>) {")
    for i in range(R):
        line = f"        var a{i} = load16(acc + {ch * i})"
        if two:
            line += f", b{i} = load16(acc + {ch * i + 16})"
        w(line)
    for i in range(0, R, 8):
        w("        let " + ", ".join(f"r{j} = rows[{j}]" for j in range(i, min(R, i + 8))))
    w("        for r in 0..<rowCount {")
    w("            var xr = x + rowIn[r], yr = dy + rowOut[r]")
    w("            for _ in 0..<width {")
    w("                let g0 = load8x2(yr, o1)" + ("; let g1 = SIMD16(lowHalf: load8(yr + o2), highHalf: load8(yr + o3))" if two else ""))
    w("                var v: SIMD16<Float>")
    for j in range(R):
        w(f"                v = SIMD16(repeating: xr[r{j}]); a{j} = fmadd(a{j}, v, g0)" + (f"; b{j} = fmadd(b{j}, v, g1)" if two else ""))
    w("                xr += xStep")
    w("                yr += 8")
    w("            }")
    w("        }")
    for i in range(R):
        w(f"        store16(a{i}, acc + {ch * i})" + (f"; store16(b{i}, acc + {ch * i + 16})" if two else ""))
    w("    }")
    return "\n".join(L)


def conv_row(P, two):
    """Row kernel for 3-wide, stride-1 taps: P consecutive output pixels of one row × 16 (or 32)
    channels. Each input value x[iy][ix][ci] is broadcast once and feeds the three output
    pixels ix, ix−1, ix−2 that its row of taps reaches (weights kx = 0, 1, 2): 3P multiply-adds
    per P + 2 broadcasts, instead of one per broadcast."""
    ch = 32 if two else 16
    name = f"convRow{P}x{ch}"
    halves = 2 if two else 1
    L = []
    w = L.append
    w(f"    /// {P} consecutive output pixels of a row × {ch} channels, for convolutions whose taps are 3 wide")
    w("    /// with stride 1 and dilation 1. `x` is the window origin of the first pixel (its neighbours are")
    w("    /// 8 floats apart), `rowStride` the floats between input rows (taps in y); `w` is packed as for")
    w("    /// `conv6x16` with `kh`·3 taps" + (", the second pair's panel `panel` floats on" if two else "") + ".")
    w("    /// Output pixel i goes to y + out + i·outStep; pixels `first`..<P are stored (a row's last tile")
    w("    /// overlaps the one before it and stores only its new pixels). `stats`: as for the pixel-table kernels.")
    w("    @inline(never)")
    w(f"    static func {name}(_ x: UnsafePointer<Float>, _ rowStride: Int, _ kh: Int, _ blocks: Int, _ cbStride: Int,")
    w("                           _ w: UnsafePointer<Float>, _ panel: Int, _ y: UnsafeMutablePointer<Float>, _ out: Int,")
    w("                           _ outStep: Int, _ outBlockStride: Int, _ first: Int, _ outBlocks: Int,")
    w("                           _ bias: UnsafePointer<Float>, _ residual: UnsafePointer<Float>?, _ lo: Float, _ hi: Float,")
    w("                           _ stats: EpilogueSums?) {")
    accs = [f"a{i}" for i in range(P)] + ([f"b{i}" for i in range(P)] if two else [])
    for i in range(0, len(accs), 8):
        w("        var " + ", ".join(f"{a} = SIMD16<Float>()" for a in accs[i:i + 8]))
    w("        var wp = w")
    w("        for blk in 0..<blocks {")
    w("            for ky in 0..<kh {")
    w("                var p = x + blk * cbStride + ky * rowStride")
    w("                for _ in 0..<8 {")
    # weights: kx = 0,1,2 at +0, +128, +256 floats (tap-major packing: (tap, ch) × 16)
    for kx in range(3):
        w(f"                    let w{kx} = load16(wp + {128 * kx})" + (f", u{kx} = load16(wp + panel + {128 * kx})" if two else ""))
    w("                    var v: SIMD16<Float>")
    for ix in range(P + 2):
        ops = []
        for kx in range(3):
            ox = ix - kx
            if 0 <= ox < P:
                ops.append(f"a{ox} = fmadd(a{ox}, v, w{kx})")
                if two:
                    ops.append(f"b{ox} = fmadd(b{ox}, v, u{kx})")
        w(f"                    v = SIMD16(repeating: p[{8 * ix}]); " + "; ".join(ops))
    w("                    p += 1")
    w("                    wp += 16")
    w("                }")
    w("                wp += 256     // past the kx = 1, 2 taps of this row")
    w("            }")
    w("        }")
    w("        var e0 = RowEpilogue16(bias: bias, residual: residual, y: y, out: out, outStep: outStep,")
    w("                               blockStride: outBlockStride, blocks: Swift.min(outBlocks, 2), lo: lo, hi: hi, stats: stats)")
    if two:
        w("        var e1 = RowEpilogue16(bias: bias + 16, residual: residual.map { $0 + 2 * outBlockStride },")
        w("                               y: y + 2 * outBlockStride, out: out, outStep: outStep, blockStride: outBlockStride,")
        w("                               blocks: outBlocks - 2, lo: lo, hi: hi, stats: stats?.nextPair(blockStride: outBlockStride))")
    for j in range(P):
        body = f"e0.store({j}, a{j})" + (f"; e1.store({j}, b{j})" if two else "")
        w(f"        if first <= {j} {{ {body} }}")
    w("        e0.finish()" + ("; e1.finish()" if two else ""))
    w("    }")
    return "\n".join(L)


def wgrad_row(CI, two):
    """Weight-gradient row kernel for 3-wide, stride-1 taps: per output row, the inputs x[i]
    (i = 0 … W+1 from the row's window origin) are each broadcast once and meet the dY vectors of
    the three output pixels i, i−1, i−2 they reach (kx = 0, 1, 2), kept in registers as a sliding
    window. acc[kx][ci][co]: 3 × CI × (16 or 32) sums."""
    ch = 32 if two else 16
    name = f"wgradRow{CI}x{ch}"
    V = 2 if two else 1
    L = []
    w = L.append
    w(f"    /// acc[3][{CI}][{ch}] (kx, input channel, output channel) += Σ over `rowCount` output rows of")
    w("    /// Σ_i broadcast(x[row + 8i + ci]) · dY[i − kx]: `x + rowIn[r]` is row r's input window origin,")
    w("    /// `dy + rowOut[r]` its first dY pixel; `count` = W + 2 inputs per row. dY pixels −2, −1, W and W + 1")
    w("    /// must read zeros (a halo of at least 1). dY channels: blocks at dy, dy + o1" + (", dy + o2, dy + o3" if two else "") + ".")
    w("    @inline(never)")
    w(f"    static func {name}(_ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ o1: Int, _ o2: Int, _ o3: Int,")
    w("                            _ rowIn: UnsafePointer<Int>, _ rowOut: UnsafePointer<Int>, _ rowCount: Int, _ count: Int,")
    w("                            _ acc: UnsafeMutablePointer<Float>) {")
    def acc(kx, c, h):
        return f"a{kx}{c}" + ("h" if h else "")
    for kx in range(3):
        for c in range(CI):
            for h in range(V):
                w(f"        var {acc(kx, c, h)} = load16(acc + {((kx * CI + c) * V + h) * 16})")
    def vec(reg, off):
        lines = [f"{reg}0 = load8x2({off}, o1)"]
        if two:
            lines.append(f"{reg}1 = SIMD16(lowHalf: load8({off} + o2), highHalf: load8({off} + o3))")
        return "; ".join(lines)
    w("        for r in 0..<rowCount {")
    w("            let xr = x + rowIn[r], yr = dy + rowOut[r]")
    decl = ", ".join(f"{g}{h}: SIMD16<Float>" for g in "pqs" for h in range(V))
    w(f"            var {decl}")
    # roles: newest, previous, the one before
    w(f"            {vec('p', 'yr - 16')}")
    w(f"            {vec('q', 'yr - 8')}")
    def step(new, prev, prev2, idx):
        out = [f"                {vec(new, f'yr + 8 * ({idx})')}"]
        for c in range(CI):
            ops = [f"v = SIMD16(repeating: xr[8 * ({idx}) + {c}])"]
            for h in range(V):
                ops.append(f"{acc(0, c, h)} = fmadd({acc(0, c, h)}, v, {new}{h})")
                ops.append(f"{acc(1, c, h)} = fmadd({acc(1, c, h)}, v, {prev}{h})")
                ops.append(f"{acc(2, c, h)} = fmadd({acc(2, c, h)}, v, {prev2}{h})")
            out.append("                " + "; ".join(ops))
        return out
    w("            var v: SIMD16<Float>")
    w("            var i = 0")
    w("            while i + 3 <= count {")
    # p = pixel i-2, q = i-1 at loop start
    for line in step("s", "q", "p", "i"): w(line)
    for line in step("p", "s", "q", "i + 1"): w(line)
    for line in step("q", "p", "s", "i + 2"): w(line)
    w("                i += 3")
    w("            }")
    w("            if i < count {")
    for line in step("s", "q", "p", "i"): w("    " + line)
    w("                if i + 1 < count {")
    for line in step("p", "s", "q", "i + 1"): w("        " + line)
    w("                }")
    w("            }")
    w("        }")
    for kx in range(3):
        for c in range(CI):
            for h in range(V):
                w(f"        store16({acc(kx, c, h)}, acc + {((kx * CI + c) * V + h) * 16})")
    w("    }")
    return "\n".join(L)


HEADER = "// Generated by scripts/generate_wide_kernels.py: do not edit by hand.\n"

if __name__ == "__main__":
    with open(os.path.join(BLOCKED, "WideConvKernels.swift"), "w") as f:
        f.write(HEADER + """// The 16-lane forward-convolution microkernels (one zmm register holds 16 output channels = two
// NCHW8c blocks):
// - f32-conv-nchw8c-8x32 / -8x16: any 8 output pixels (a pixel table), each input value broadcast
//   once and multiplied by one or two 16-channel weight vectors. Eight pixels keep every pixel
//   pointer in a general register (twelve spilled them, and the kernels' speed then swung with
//   code placement).
// - f32-conv-nchw8c-row16x16 / -row8x32 / -row8x16: consecutive pixels of one output row, for
//   taps 3 wide at stride 1; each broadcast feeds three pixels (kx = 0, 1, 2).
extension BlockedConv2D {
""" + "\n\n".join([conv(8, True, False), conv(8, False, True), conv_row(8, True), conv_row(8, False),
                      conv_row(16, False)]) + "\n}\n")
    with open(os.path.join(BLOCKED, "WideConvWeightGradientKernels.swift"), "w") as f:
        f.write(HEADER + """// The 16-lane weight-gradient microkernels (one dY vector holds 16 output channels of two NCHW8c blocks):
// - f32-convwgrad-nchw8c-12x32 / -12x16: 12 reduction rows (input channel, tap) × 32 or 16 output
//   channels, any convolution;
// - f32-convwgrad-nchw8c-row4x32 / -row8x16: taps 3 wide at stride 1, 3 taps × 4 or 8 input channels
//   × 32 or 16 output channels per tile, each broadcast input feeding three dY pixels.
extension BlockedConvWeightGradient {
""" + "\n\n".join([wgrad(12, True), wgrad(12, False), wgrad_row(4, True), wgrad_row(8, False)]) + "\n}\n")

