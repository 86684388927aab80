import DynamicShims
import Foundation

/// A small persistent thread pool for kernels. Workers spin briefly between jobs (a ResNet-56
/// layer at batch 1 takes ~40 µs, so waking a sleeping thread per layer would cost more than
/// the work), then sleep on a semaphore. The caller works on every job too.
///
/// Workers *join* a job through a ticket word; the caller closes the ticket once every task is
/// claimed and waits only for workers that joined. A worker that the OS has descheduled (another
/// process on its core) therefore never holds up a job it did not start.
///
/// Tasks are claimed dynamically, but each task always computes the same outputs the same way,
/// so results never depend on the number of threads or on scheduling.
final class ThreadPool: @unchecked Sendable {
    static let shared = ThreadPool(workers: Swift.max(0, Parallel.coreCount - 1))

    private final class Worker: @unchecked Sendable {
        let wake = DispatchSemaphore(value: 0)
        /// 1 while the worker is (about to be) blocked on `wake`.
        let sleeping = UnsafeMutablePointer<Int>.allocate(capacity: 1)
        init() { sleeping.initialize(to: 0) }
    }

    // Ticket layout: generation << 10 | closed << 9 | joined workers (< 512).
    private static let closedBit = 1 << 9, joinedMask = (1 << 9) - 1, generationShift = 10

    private let workers: [Worker]
    /// Shared counters, each on its own cache line.
    private let counters = UnsafeMutablePointer<Int>.allocate(capacity: 48)
    private var ticket: UnsafeMutablePointer<Int> { counters }
    private var nextTask: UnsafeMutablePointer<Int> { counters + 16 }
    private var finished: UnsafeMutablePointer<Int> { counters + 32 }
    private var jobTasks = 0
    private var jobWorkers = 0
    private var job: ((Int) -> Void)?
    private let submit = NSLock()
    /// How long an idle worker spins before it sleeps. Measured by the clock, not by `pause`
    /// counts: a pause lasts ~10 cycles on some cores and ~140 on others, and a worker that fell
    /// asleep between two layers cost ResNet-56 a third of its two-thread speed.
    private static let spinNanoseconds: UInt64 = 1_000_000

    init(workers count: Int) {
        counters.initialize(repeating: 0, count: 48)
        workers = (0..<count).map { _ in Worker() }
        for (i, w) in workers.enumerated() {
            // Worker i stays on CPU i + 1: left to itself, Linux was seen parking the spinning
            // worker and the caller on one CPU half of the time, halving two-thread speed.
            let cpu = dyn_allowed_cpu(Int32((i + 1) % Swift.max(Parallel.coreCount, 1)))
            let t = Thread { [unowned self] in
                if cpu >= 0 { _ = dyn_pin_current_thread(cpu) }
                self.workerLoop(w)
            }
            t.name = "dyn-pool"
            t.stackSize = 1 << 20
            t.start()
        }
    }

    var workerCount: Int { workers.count }

    /// Runs body(0..<tasks) on the caller plus up to `threads - 1` workers; returns when done.
    func run(tasks: Int, threads: Int, _ body: (Int) -> Void) {
        let helpers = Swift.min(threads - 1, workers.count, tasks - 1)
        // Busy (a nested call from inside a job, or another thread's job): run inline rather
        // than wait, which could deadlock.
        if helpers <= 0 || !submit.try() {
            for i in 0..<tasks { body(i) }
            return
        }
        defer { submit.unlock() }
        withoutActuallyEscaping(body) { body in
            job = body
            jobTasks = tasks
            jobWorkers = helpers
            dyn_atomic_store(nextTask, 0)
            dyn_atomic_store(finished, 0)
            let generation = (dyn_atomic_load(ticket) >> Self.generationShift) + 1
            dyn_atomic_store(ticket, generation << Self.generationShift)   // release: publishes the job
            for w in workers.prefix(helpers) where dyn_atomic_cas(w.sleeping, 1, 0) != 0 { w.wake.signal() }
            drain(body)
            // Close the ticket: no worker joins after this; wait for those that did.
            var t = dyn_atomic_load(ticket)
            while dyn_atomic_cas(ticket, t, t | Self.closedBit) == 0 { t = dyn_atomic_load(ticket) }
            let joined = t & Self.joinedMask
            // Spin (a worker's last task takes microseconds); yield only if it was descheduled.
            var spins = 0
            let waitStart = DispatchTime.now().uptimeNanoseconds
            while dyn_atomic_load(finished) < joined {
                spins += 1
                if spins & 255 != 0 || DispatchTime.now().uptimeNanoseconds - waitStart < Self.spinNanoseconds {
                    dyn_cpu_relax()
                } else {
                    sched_yield()
                }
            }
            job = nil
        }
    }

    private func drain(_ body: (Int) -> Void) {
        while true {
            let i = dyn_atomic_fetch_add(nextTask, 1)
            if i >= jobTasks { return }
            body(i)
        }
    }

    /// Takes tasks of the current job; its reference to the job closure ends with this call,
    /// before the worker reports completion (the closure is only borrowed from `run`).
    private func participate() {
        guard let body = job else { return }
        drain(body)
    }

    /// Joins the job of `generation` if it is still open and has room; false otherwise.
    private func join(_ generation: Int) -> Bool {
        while true {
            let t = dyn_atomic_load(ticket)
            if t >> Self.generationShift != generation || t & Self.closedBit != 0 || t & Self.joinedMask >= jobWorkers {
                return false
            }
            if dyn_atomic_cas(ticket, t, t + 1) != 0 { return true }
        }
    }

    private func workerLoop(_ worker: Worker) {
        var seen = 0
        while true {
            var spins = 0
            var spinStart = DispatchTime.now().uptimeNanoseconds
            var generation = dyn_atomic_load(ticket) >> Self.generationShift
            while generation == seen {
                spins += 1
                if spins & 255 != 0 || DispatchTime.now().uptimeNanoseconds - spinStart < Self.spinNanoseconds {
                    dyn_cpu_relax()
                } else {
                    dyn_atomic_store(worker.sleeping, 1)
                    if dyn_atomic_load(ticket) >> Self.generationShift != seen {
                        // A job arrived meanwhile: cancel the sleep, unless the submitter already
                        // claimed the flag and will signal (then consume that signal).
                        if dyn_atomic_cas(worker.sleeping, 1, 0) == 0 { worker.wake.wait() }
                    } else {
                        worker.wake.wait()
                    }
                    spinStart = DispatchTime.now().uptimeNanoseconds
                }
                generation = dyn_atomic_load(ticket) >> Self.generationShift
            }
            seen = generation
            if join(generation) {
                participate()
                dyn_atomic_fetch_add(finished, 1)
            }
        }
    }
}
