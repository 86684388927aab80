import DynamicCore
import Foundation

/// Why a `Trainer` run could not start or go on.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
    /// The batch source yields no batch per epoch.
    case noBatches
    /// `resume` found a checkpoint of another run: `key` was `found` there, is `expected` now.
    case resumeMismatch(key: String, expected: String, found: String?)
    /// The checkpoint's step is not a whole number of epochs of this batch source.
    case resumeStep(step: Int, epoch: Int, stepsPerEpoch: Int)
    case checkpoint(String)
    case io(String)

    public var description: String {
        switch self {
        case .noBatches: return "the training set yields no batch (batch size larger than the set?)"
        case .resumeMismatch(let k, let e, let f): return "resume: \(k) is \(e) but the checkpoint's run used \(f ?? "nothing")"
        case .resumeStep(let s, let e, let n): return "resume: checkpoint step \(s) is not epoch \(e) × \(n) steps"
        case .checkpoint(let m): return "checkpoint: \(m)"
        case .io(let m): return m
        }
    }
}

/// The run's log as written to log.json.
public struct TrainingLog: Codable, Sendable {
    public var config: [String: String]
    public var epochs: [EpochRecord]
}

extension Trainer {
    /// Trains `network` for `options.epochs` epochs of `train` (or `options.timeBudget` seconds).
    /// - `cropStages`: other batch sources for the first part of the run — progressive resizing
    ///   with smaller crops — each used until its fraction `until` of the run (of the epochs, or of
    ///   the time budget), in order; `train` after the last.
    /// - `validation`, `test`: scored in eval mode after every epoch (the test set every
    ///   `options.testEvery` epochs and after the last), per output; unshuffled, unaugmented.
    /// - `outputDirectory`: log.csv, log.json and checkpoint.safetensors written every epoch.
    /// - `resume`: continue from that directory's checkpoint, which must come from a run of the
    ///   same `config`; the data order and augmentation replay exactly.
    @discardableResult
    public func fit(train: some BatchSource, cropStages: [(batches: any BatchSource, until: Double)] = [],
                    validation: (any BatchSource)? = nil, test: (any BatchSource)? = nil, outputDirectory: URL? = nil, resume: Bool = false) throws(TrainingError) -> [EpochRecord] {
        let stepsPerEpoch = train.batchCount
        guard stepsPerEpoch > 0 else { throw .noBatches }
        let o = options
        let baseRate = Double(optimizer.groups.first?.learningRate ?? 0)
        let warmupSteps = Int((o.warmupEpochs * Double(stepsPerEpoch)).rounded())
        let timeBudget = o.timeBudget.map { TimeBudget(seconds: $0, warmupSteps: warmupSteps) }
        let schedule = Self.schedule(o, warmupSteps: warmupSteps,
                                     totalSteps: timeBudget == nil ? o.epochs * stepsPerEpoch : warmupSteps + TimeBudget.ticks)
        let ckptURL = outputDirectory?.appendingPathComponent("checkpoint.safetensors")
        var startEpoch = 0, elapsedBefore = 0.0
        var warmupEnd: Double?   // elapsed seconds when the warm-up ended (time-budget runs)
        records = []
        if let dir = outputDirectory {
            do { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) } catch {
                throw .io("cannot create \(dir.path): \(error)")
            }
        }
        if resume, let ckptURL {
            let info: CheckpointInfo
            do { info = try Checkpoint.load(from: ckptURL, model: network, optimizer: optimizer) } catch {
                throw .checkpoint(error.description)
            }
            for (k, v) in config where info.metadata[k] != v { throw .resumeMismatch(key: k, expected: v, found: info.metadata[k]) }
            if info.metadata["finished"] == "true" { return records }
            guard info.step == info.epoch * stepsPerEpoch else {
                throw .resumeStep(step: info.step, epoch: info.epoch, stepsPerEpoch: stepsPerEpoch)
            }
            startEpoch = info.epoch
            elapsedBefore = Double(info.metadata["elapsed_s"] ?? "0") ?? 0
            warmupEnd = info.metadata["warmup_end_s"].flatMap(Double.init)
            if let data = try? Data(contentsOf: outputDirectory!.appendingPathComponent("log.json")),
               let log = try? JSONDecoder().decode(TrainingLog.self, from: data) {
                records = log.epochs.filter { $0.epoch <= startEpoch }
            }
            progress("resumed from \(ckptURL.path): epoch \(startEpoch), step \(info.step), \(Self.duration(elapsedBefore)) elapsed\n")
            guard startEpoch < o.epochs else { return records }
        }

        let runStart = DispatchTime.now().uptimeNanoseconds
        var elapsed: Double { elapsedBefore + Double(DispatchTime.now().uptimeNanoseconds - runStart) / 1e9 }
        var trainSecondsPerStep: Double?   // running estimate for the ETA
        var evalSeconds = 0.0
        // Time-budget runs keep the final scoring's duration in reserve: the last one timed, or an estimate.
        var timedEval: Double?
        var finalEvalReserve = 0.0
        let scoredImages = (validation?.imageCount ?? 0) + (test?.imageCount ?? 0) * (o.flipTTA ? 2 : 1)
        if warmupSteps == 0 || startEpoch * stepsPerEpoch >= warmupSteps { warmupEnd = warmupEnd ?? elapsedBefore }
        var outOfTime = false
        for epoch in startEpoch..<o.epochs where !outOfTime {
            // The first crop stage whose fraction (of the time budget, or of the epochs) is not reached yet.
            let progressFraction = timeBudget.map { elapsed / $0.seconds } ?? Double(epoch) / Double(o.epochs)
            let source: any BatchSource = cropStages.first { progressFraction < $0.until }?.batches ?? train
            let batchAt = source.batches(ofEpoch: epoch)
            var lossSum = 0.0, correct = 0, seen = 0, steps = 0
            let epochStart = DispatchTime.now().uptimeNanoseconds
            var lastPrint: UInt64 = 0
            for k in 0..<stepsPerEpoch {
                let step = epoch * stepsPerEpoch + k
                let now = elapsed
                if timeBudget != nil, seen > 0 {
                    // Until a scoring is timed: its forward passes at 2× the training rate (a step is
                    // ~3 forwards; eval batches run slower).
                    let rate = Double(seen) / (Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9)
                    finalEvalReserve = timedEval ?? Double(scoredImages) / (2 * rate)
                }
                if let timeBudget, timeBudget.isSpent(elapsed: now, reserve: finalEvalReserve), steps > 0 { outOfTime = true; break }
                if step == warmupSteps, warmupEnd == nil { warmupEnd = now }
                optimizer.learningRateScale = schedule.factor(
                    at: timeBudget?.position(step: step, elapsed: now, warmupEnd: warmupEnd, reserve: finalEvalReserve) ?? step)
                let r = self.step(batchAt(k))
                lossSum += Double(r.loss) * Double(r.count)
                correct += r.correct
                seen += r.count
                steps += 1
                let t = DispatchTime.now().uptimeNanoseconds
                if o.showsProgress && (t - lastPrint > 250_000_000 || k == stepsPerEpoch - 1) {
                    lastPrint = t
                    let s = Double(t - epochStart) / 1e9
                    let perStep = s / Double(k + 1)
                    let eta: Double
                    if let timeBudget {
                        eta = max(timeBudget.seconds - elapsed, 0)
                    } else {
                        let remainingSteps = Double((o.epochs - epoch) * stepsPerEpoch - k - 1)
                        eta = remainingSteps * (trainSecondsPerStep.map { ($0 + perStep) / 2 } ?? perStep)
                            + Double(o.epochs - epoch) * evalSeconds
                    }
                    progress(String(format: "\repoch %d%@  step %d/%d  loss %.4f  acc %.4f  %.0f img/s  lr %.4g  ETA %@   ",
                                    epoch + 1, timeBudget == nil ? "/\(o.epochs)" : "", k + 1, stepsPerEpoch,
                                    lossSum / Double(seen), Double(correct) / Double(seen), Double(seen) / s,
                                    baseRate * optimizer.learningRateScale, Self.duration(eta)))
                }
            }
            let trainSeconds = Double(DispatchTime.now().uptimeNanoseconds - epochStart) / 1e9
            let secondsPerStep = trainSeconds / Double(steps)
            trainSecondsPerStep = secondsPerStep
            if let timeBudget, !outOfTime, timeBudget.isSpent(elapsed: elapsed + secondsPerStep, reserve: finalEvalReserve) {
                outOfTime = true   // no room for another step
            }
            let evalStart = DispatchTime.now().uptimeNanoseconds
            let val = validation.flatMap { $0.imageCount > 0 ? evaluate($0) : nil }
            let scoresTest = (epoch + 1) % o.testEvery == 0 || epoch + 1 == o.epochs || outOfTime
            let tst = scoresTest ? test.map { evaluate($0, flip: o.flipTTA) } : nil
            evalSeconds = Double(DispatchTime.now().uptimeNanoseconds - evalStart) / 1e9
            if scoresTest { timedEval = evalSeconds; finalEvalReserve = evalSeconds }
            let several = (val?.accuracy.count ?? tst?.accuracy.count ?? 1) > 1
            let rec = EpochRecord(epoch: epoch + 1, elapsed_s: elapsed, train_loss: lossSum / Double(seen),
                                  train_acc: Double(correct) / Double(seen), val_acc: val?.accuracy.last,
                                  test_acc: tst?.accuracy.last, test_acc_flip: tst?.flipAccuracy?.last,
                                  lr: baseRate * optimizer.learningRateScale, train_img_per_s: Double(seen) / trainSeconds,
                                  steps: steps < stepsPerEpoch ? steps : nil,
                                  val_acc_exits: several ? val?.accuracy : nil, test_acc_exits: several ? tst?.accuracy : nil)
            records.append(rec)
            if o.showsProgress {
                progress("\r" + String(repeating: " ", count: 110) + "\r")
                func acc(_ a: Double?) -> String { a.map { String(format: "%.4f", $0) } ?? "  –   " }
                let size = source.imageSize, full = train.imageSize
                let crop = size != full ? " at \(size.height) px" : ""
                print(String(format: "epoch %3d  %8.1f s  loss %.4f  train %.4f  val %@  test %@%@  %.0f img/s%@ (eval %.1f s)%@",
                             rec.epoch, rec.elapsed_s, rec.train_loss, rec.train_acc, acc(rec.val_acc), acc(rec.test_acc),
                             o.flipTTA ? " (flip \(acc(rec.test_acc_flip)))" : "", rec.train_img_per_s, crop, evalSeconds,
                             steps < stepsPerEpoch ? ", \(steps) of \(stepsPerEpoch) steps: time is up" : ""))
                fflush(nil)
            }
            if let dir = outputDirectory, let ckptURL {
                var meta = config.merging(["elapsed_s": String(rec.elapsed_s)]) { a, _ in a }
                if let warmupEnd { meta["warmup_end_s"] = String(warmupEnd) }
                if outOfTime { meta["finished"] = "true" }
                do {
                    try Checkpoint.save(model: network, optimizer: optimizer,
                                        info: CheckpointInfo(epoch: epoch + 1, step: epoch * stepsPerEpoch + steps, metadata: meta),
                                        to: ckptURL)
                } catch { throw .checkpoint(error.description) }
                try writeLogs(to: dir)
            }
        }
        return records
    }

    /// log.csv (epoch, elapsed_s, train_loss, train_acc, val_acc, test_acc[, test_acc_flip][, per-exit
    /// val and test accuracies]) and log.json (the config and every field of every epoch).
    func writeLogs(to dir: URL) throws(TrainingError) {
        let flip = options.flipTTA
        let exits = records.last?.val_acc_exits?.count ?? records.last?.test_acc_exits?.count ?? 0
        var csv = "epoch,elapsed_s,train_loss,train_acc,val_acc,test_acc" + (flip ? ",test_acc_flip" : "")
            + (0..<exits).map { ",val_acc_exit\($0)" }.joined() + (0..<exits).map { ",test_acc_exit\($0)" }.joined() + "\n"
        func cell(_ v: Double?) -> String { v.map { String(format: "%.4f", $0) } ?? "" }
        for r in records {
            var cells = [r.val_acc, r.test_acc] + (flip ? [r.test_acc_flip] : [])
            cells += (0..<exits).map { r.val_acc_exits?[$0] } + (0..<exits).map { r.test_acc_exits?[$0] }
            csv += String(format: "%d,%.1f,%.4f,%.4f,", r.epoch, r.elapsed_s, r.train_loss, r.train_acc)
                + cells.map(cell).joined(separator: ",") + "\n"
        }
        let enc = JSONEncoder()
        enc.outputFormatting = [.prettyPrinted, .sortedKeys]
        let threads = String(options.threads ?? Parallel.defaultThreads)
        do {
            try csv.write(to: dir.appendingPathComponent("log.csv"), atomically: true, encoding: .utf8)
            try enc.encode(TrainingLog(config: config.merging(["threads": threads, "target": "\(TargetFeatures.summary) \(options.kernels)"]) { a, _ in a },
                                       epochs: records)).write(to: dir.appendingPathComponent("log.json"))
        } catch { throw .io("cannot write the log in \(dir.path): \(error)") }
    }

    /// The learning-rate schedule of a run: `options.schedule` over the steps after the warm-up,
    /// after a linear warm-up from 1 % when there is one.
    static func schedule(_ o: TrainingOptions, warmupSteps: Int, totalSteps: Int) -> LRSchedule {
        let mainSteps = max(totalSteps - warmupSteps, 1)
        let main: LRSchedule
        switch o.schedule {
        case .cosine: main = .cosine(steps: mainSteps, minFactor: 0)
        case .multistep: main = .multiStep(milestones: [mainSteps / 2, mainSteps * 3 / 4], gamma: 0.1)
        case .constant: main = .constant
        }
        return warmupSteps > 0 ? .warmup(steps: warmupSteps, startFactor: 0.01, then: main) : main
    }

    /// Seconds as h:mm:ss or m:ss (the progress line's ETA).
    public static func duration(_ s: Double) -> String {
        let t = Int(s.rounded())
        return t >= 3600 ? String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60) : String(format: "%d:%02d", t / 60, t % 60)
    }

    private func progress(_ s: String) {
        guard options.showsProgress else { return }
        FileHandle.standardError.write(s.data(using: .utf8)!)
    }
}
