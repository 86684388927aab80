import Foundation

/// How many threads kernels may use. Results never depend on it: work is split so that every
/// output element is computed by exactly one thread in a fixed order.
public enum Parallel {
    /// Number of cores available to this process.
    public static let coreCount: Int = ProcessInfo.processInfo.activeProcessorCount

    /// Process-wide default used when a call does not pass `threads`. Default: all cores.
    nonisolated(unsafe) public static var defaultThreads: Int = ProcessInfo.processInfo.activeProcessorCount

    /// Runs `body(i)` for i in 0..<count on up to `threads` threads (the caller included);
    /// returns when all finished. Uses the persistent spinning pool (see `ThreadPool`).
    public static func forEach(_ count: Int, threads: Int? = nil, _ body: (Int) -> Void) {
        let t = Swift.min(threads ?? defaultThreads, count)
        if t <= 1 {
            for i in 0..<count { body(i) }
            return
        }
        ThreadPool.shared.run(tasks: count, threads: t, body)
    }

    /// Splits 0..<total into `parts` contiguous ranges whose bounds are multiples of `align`.
    public static func ranges(_ total: Int, parts: Int, align: Int = 1) -> [Range<Int>] {
        let units = (total + align - 1) / align
        let p = Swift.max(1, Swift.min(parts, units))
        var out: [Range<Int>] = []
        var start = 0
        for i in 0..<p {
            let endUnits = units * (i + 1) / p
            let end = Swift.min(total, endUnits * align)
            if end > start { out.append(start..<end) }
            start = end
        }
        return out
    }
}

struct UncheckedSendable<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
