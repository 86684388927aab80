import DynamicCore

// Batch partitioning: part of a network runs on part of the batch, and the skipped samples are
// never computed (DESIGN §3). The active rows are gathered into a compact sub-batch
// (`gathering(rows:)`), the ops run on it at their normal speed, and the results either go back
// in place of those rows (`replacing(rows:with:)`, `updatingRows`: a block some samples skip) or
// the sub-batch simply goes on alone (early exit: the samples that left are not scattered back).
// Every op charges its cost to the samples it ran on (`FeatureMap.samples`), and in training a
// batch norm on a sub-batch takes its statistics from the samples that ran.
//
// Outside a recording the replaced rows are written into the receiver's own buffer: a
// partitioned block moves only the m active images twice (gather and put back), never the N − m
// that passed through.

extension FeatureMap {
    /// This map with rows `rows` (distinct indices into its N rows) replaced by `update`
    /// [rows.count, C, H, W]; the other rows keep their values: y[rows[i]] = update[i].
    ///
    /// Consumes this map: outside a recording the update is written into its buffer (no copy of
    /// the rows that pass through), and reading it afterwards is a programmer error. While
    /// recording, the result is a new buffer and the backward hands g[rows] to `update` and g
    /// with those rows zeroed to this map.
    public func replacing(rows: [Int], with update: FeatureMap) -> FeatureMap {
        precondition(update.n == rows.count && update.c == c && update.h == h && update.w == w,
                     "replacing \(rows.count) rows of \(shape) with \(update.shape)")
        precondition(update.samples == rows.map { samples?[$0] ?? $0 }, "replacing: the update's samples are not those rows")
        let x = blocked(), u = update.blocked()
        let y: PooledBuffer
        if engine.isRecording {
            y = engine.buffer(x.shape)
            y.pointer.update(from: x.pointer, count: x.shape.count)
        } else {
            y = x
        }
        BlockedOps.scatterImages(u.buffer, rows: rows, into: y.buffer, threads: engine.threads)
        let out = derived(c: c, h: h, w: w, y)
        consume()
        return out.recorded(ReplaceRowsNode(input: self, update: update, rows: rows, output: out), inputs: [self, update])
    }

    /// Runs `body` on rows `rows` only (distinct indices into this map's rows) and puts its
    /// output in their place: y[rows] = body(x[rows]), the other rows pass through unchanged —
    /// a block that some samples skip. `body` must keep the shape [·, C, H, W].
    ///
    /// No rows: returns this map and never calls `body`. All rows in order: `body(self)`, with no
    /// gather or scatter. Otherwise this map is consumed (see `replacing(rows:with:)`).
    public func updatingRows(_ rows: [Int], _ body: (FeatureMap) -> FeatureMap) -> FeatureMap {
        if rows.isEmpty { return self }
        if rows.count == n && rows.indices.allSatisfy({ rows[$0] == $0 }) { return body(self) }
        let out = body(gathering(rows: rows))
        return replacing(rows: rows, with: out)
    }

    /// Marks the map as consumed: its buffer now belongs to another map.
    private func consume() {
        storage = .consumed
        wide = nil
    }
}

extension Engine {
    /// A map over a buffer the caller owns (never returned to the pool), as rows 0..<N of the
    /// batch begun: benchmarks run an op on the same data again and again without packing it.
    package func map(wrapping buffer: BlockedBuffer) -> FeatureMap {
        precondition(buffer.shape.halo >= 1, "engine maps keep a halo of at least 1")
        precondition(buffer.shape.n == sampleCosts.count, "map of \(buffer.shape.n) images in a batch of \(sampleCosts.count)")
        let s = buffer.shape
        return FeatureMap(engine: self, n: s.n, c: s.c, h: s.h, w: s.w,
                          storage: .blocked(PooledBuffer(buffer, pool: nil)), samples: nil)
    }
}

final class ReplaceRowsNode: TapeNode {
    let input: FeatureMap, update: FeatureMap, rows: [Int], output: FeatureMap
    init(input: FeatureMap, update: FeatureMap, rows: [Int], output: FeatureMap) {
        (self.input, self.update, self.rows, self.output) = (input, update, rows, output)
    }

    func backward() {
        guard let g = output.grad else { input.skipContribution(); update.skipContribution(); return }
        output.grad = nil
        let threads = input.engine.threads
        update.contributeGradient { dst, accumulate in
            BlockedOps.copyImages(g.buffer, rows: rows, into: dst, accumulate: accumulate, threads: threads)
        }
        // The replaced rows took nothing from the input.
        BlockedOps.zeroImages(g.buffer, rows: rows, threads: threads)
        input.accumulateGradient(g)
    }
}
