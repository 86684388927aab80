import DynamicCore

// Channel concatenation and slicing, and sub-batches: the ops that move data without arithmetic.
//
// Concatenation compacts: the output has exactly C1 + C2 + … channels, renumbered densely, so
// a part whose channel count is not a multiple of 8 (MSDNet/RANet growth rates 6, 12, 24) is
// copied lane by lane into the block it shares. The alternative, padded segments (each part
// starting on a block boundary), copies nothing extra but makes every later convolution
// reduce over the padding: growth 6 in blocks of 8 is 33 % more input channels per part.

extension FeatureMap {
    /// Concatenation along channels: [N, C_i, H, W] … → [N, ΣC_i, H, W] (PyTorch `torch.cat(dim=1)`).
    public static func concat(_ parts: [FeatureMap]) -> FeatureMap {
        precondition(!parts.isEmpty, "concat of nothing")
        let first = parts[0], e = first.engine
        precondition(parts.allSatisfy { $0.engine === e && $0.n == first.n && $0.h == first.h && $0.w == first.w
                                         && $0.samples == first.samples },
                     "concat: parts must share engine, rows and spatial size: \(parts.map(\.shape))")
        let total = parts.reduce(0) { $0 + $1.c }
        let y = e.buffer(BlockedShape(n: first.n, c: total, h: first.h, w: first.w, halo: 1))
        var offsets: [Int] = []
        var at = 0
        for p in parts {
            BlockedOps.copyChannels(p.blocked().buffer, 0..<p.c, into: y.buffer, at: at, threads: e.threads)
            offsets.append(at)
            at += p.c
        }
        let out = first.derived(c: total, h: first.h, w: first.w, y)
        return out.recorded(ConcatNode(parts: parts, offsets: offsets, output: out), inputs: parts)
    }

    /// Channels `range` of the map: [N, C, H, W] → [N, range.count, H, W] (`x[:, a:b]`).
    public func channels(_ range: Range<Int>) -> FeatureMap {
        precondition(!range.isEmpty && range.lowerBound >= 0 && range.upperBound <= c, "channels \(range) of \(shape)")
        let y = engine.buffer(BlockedShape(n: n, c: range.count, h: h, w: w, halo: 1))
        BlockedOps.copyChannels(blocked().buffer, range, into: y.buffer, at: 0, threads: engine.threads)
        let out = derived(c: range.count, h: h, w: w, y)
        return out.recorded(SliceNode(input: self, range: range, output: out), inputs: [self])
    }

    /// The sub-batch of rows `rows` (distinct indices into this map's N rows, in the order given), as a
    /// compact map [rows.count, C, H, W] whose `samples` name the same engine samples. Ops on it
    /// cost only those samples; in training, batch statistics come from them. Outside a recording
    /// the rows are not copied until an op needs them compact: convolutions read them in place.
    public func gathering(rows: [Int]) -> FeatureMap {
        precondition(!rows.isEmpty, "gathering no rows: skip the computation instead")
        precondition(Set(rows).count == rows.count && rows.allSatisfy { $0 >= 0 && $0 < n }, "gathering: distinct rows of \(n)")
        let picked = rows.map { samples?[$0] ?? $0 }
        if !engine.isRecording {
            if case .rows(let source, let parent) = storage {
                return FeatureMap(engine: engine, n: rows.count, c: c, h: h, w: w, storage: .rows(source, rows.map { parent[$0] }),
                                  samples: picked)
            }
            return FeatureMap(engine: engine, n: rows.count, c: c, h: h, w: w, storage: .rows(blocked(), rows), samples: picked)
        }
        let x = blocked()
        let y = engine.buffer(BlockedShape(n: rows.count, c: c, h: h, w: w, halo: x.shape.halo))
        BlockedOps.copyImages(x.buffer, rows: rows, into: y.buffer, threads: engine.threads)
        let out = FeatureMap(engine: engine, n: rows.count, c: c, h: h, w: w, storage: .blocked(y), samples: picked)
        return out.recorded(GatherNode(input: self, rows: rows, output: out), inputs: [self])
    }

    /// This map with `update` [rows.count, C, H, W] added to rows `rows` (distinct indices into
    /// this map's rows); the other rows pass unchanged: a block's output put back for the samples
    /// that ran it.
    public func adding(_ update: FeatureMap, atRows rows: [Int]) -> FeatureMap {
        precondition(update.n == rows.count && update.c == c && update.h == h && update.w == w,
                     "adding \(update.shape) at \(rows.count) rows of \(shape)")
        precondition(update.samples == rows.map { samples?[$0] ?? $0 }, "adding: the update's samples are not those rows")
        let x = blocked(), u = update.blocked()
        precondition(x.shape.halo == 1 && u.shape.halo == 1, "adding: halo-1 buffers expected")
        let y = engine.buffer(x.shape)
        y.pointer.update(from: x.pointer, count: x.shape.count)
        BlockedOps.scatterImages(u.buffer, rows: rows, into: y.buffer, accumulate: true, threads: engine.threads)
        let out = derived(c: c, h: h, w: w, y)
        return out.recorded(ScatterAddNode(input: self, update: update, rows: rows, output: out), inputs: [self, update])
    }
}

final class ConcatNode: TapeNode {
    let parts: [FeatureMap], offsets: [Int], output: FeatureMap
    init(parts: [FeatureMap], offsets: [Int], output: FeatureMap) { (self.parts, self.offsets, self.output) = (parts, offsets, output) }

    func backward() {
        guard let g = output.grad else { parts.forEach { $0.skipContribution() }; return }
        output.grad = nil
        for (p, at) in zip(parts, offsets) {
            p.contributeGradient { dst, accumulate in
                BlockedOps.copyChannels(g.buffer, at..<(at + p.c), into: dst, at: 0, accumulate: accumulate,
                                        threads: p.engine.threads)
            }
        }
    }
}

final class SliceNode: TapeNode {
    let input: FeatureMap, range: Range<Int>, output: FeatureMap
    init(input: FeatureMap, range: Range<Int>, output: FeatureMap) { (self.input, self.range, self.output) = (input, range, output) }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); return }
        output.grad = nil
        input.contributeGradient { dst, accumulate in
            if !accumulate { BlockedOps.zeroInterior(dst, threads: input.engine.threads) }
            BlockedOps.copyChannels(g.buffer, 0..<range.count, into: dst, at: range.lowerBound, accumulate: accumulate,
                                    threads: input.engine.threads)
        }
    }
}

final class GatherNode: TapeNode {
    let input: FeatureMap, rows: [Int], output: FeatureMap
    init(input: FeatureMap, rows: [Int], output: FeatureMap) { (self.input, self.rows, self.output) = (input, rows, output) }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); return }
        output.grad = nil
        input.contributeGradient { dst, accumulate in
            if !accumulate { BlockedOps.zeroInterior(dst, threads: input.engine.threads) }
            BlockedOps.scatterImages(g.buffer, rows: rows, into: dst, accumulate: true, threads: input.engine.threads)
        }
    }
}

final class ScatterAddNode: TapeNode {
    let input: FeatureMap, update: FeatureMap, rows: [Int], output: FeatureMap
    init(input: FeatureMap, update: FeatureMap, rows: [Int], output: FeatureMap) {
        (self.input, self.update, self.rows, self.output) = (input, update, rows, output)
    }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); update.skipContribution(); return }
        output.grad = nil
        update.contributeGradient { dst, accumulate in
            BlockedOps.copyImages(g.buffer, rows: rows, into: dst, accumulate: accumulate, threads: update.engine.threads)
        }
        input.accumulateGradient(g)
    }
}
