import DynamicInference
import Foundation

// `dynbench peak` (this machine's measured FMA throughput) and `dynbench pool` (thread-pool dispatch cost).

func runPeak(threads: [Int]) {
    let iters = 50_000_000
    for t in threads {
        var samples: [Double] = []
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            Parallel.forEach(t, threads: t) { i in _ = PeakProbe.fmaLoop(iterations: iters, seed: Float(i)) }
            samples.append(PeakProbe.flops(iterations: iters) * Double(t) / (Double(DispatchTime.now().uptimeNanoseconds - t0)))
        }
        print(String(format: "peak FMA throughput, %d thread(s): %.1f GFLOP/s (median of 5; best %.1f)",
                     t, Timing(samples: samples).median, samples.max()!))
    }
}

/// Thread-pool dispatch cost and balance: many tiny jobs of 16 tasks on all cores.
func runPoolProbe() {
    let threads = Parallel.coreCount
    for work in [0, 2_000, 20_000] {
        var callerShare = 0.0
        let calls = 20_000
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<calls {
            let me = Thread.current
            var mine = 0
            withUnsafeMutablePointer(to: &mine) { minePtr in
                Parallel.forEach(16, threads: threads) { _ in
                    var acc: Float = 0
                    for k in 0..<work { acc += Float(k) }
                    if acc == -1 { print(acc) }
                    if Thread.current == me { minePtr.pointee += 1 }
                }
            }
            callerShare += Double(mine) / 16
        }
        let us = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e3 / Double(calls)
        print(String(format: "pool: 16 tasks × %6d adds, %d threads: %7.2f µs per call, caller ran %.0f%% of tasks",
                     work, threads, us, 100 * callerShare / Double(calls)))
    }
}

