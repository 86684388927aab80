import DynamicCore
import Foundation

/// Where a checkpointed run stands, plus the caller's own metadata.
public struct CheckpointInfo: Sendable, Equatable {
    /// Completed epochs, and optimizer steps taken in total.
    public var epoch: Int, step: Int
    public var metadata: [String: String]

    public init(epoch: Int, step: Int, metadata: [String: String] = [:]) {
        self.epoch = epoch
        self.step = step
        self.metadata = metadata
    }
}

public enum CheckpointError: Error, CustomStringConvertible {
    case file(SafeTensorsError)
    /// The file is safetensors but not a checkpoint of this format.
    case notACheckpoint(path: String, reason: String)
    case model(StateDictError)
    case optimizer(OptimizerStateError)

    public var description: String {
        switch self {
        case .file(let e): return "checkpoint: \(e)"
        case .notACheckpoint(let p, let r): return "\(p) is not a checkpoint: \(r)"
        case .model(let e): return "checkpoint model state: \(e)"
        case .optimizer(let e): return "checkpoint optimizer state: \(e)"
        }
    }
}

/// A training checkpoint in one safetensors file: the model's state dict under `model.<key>`,
/// the optimizer's state under `optimizer.<key>`, and `epoch`, `step` and `format` in
/// `__metadata__` next to the caller's entries. Data order and augmentation are derived
/// from (seed, epoch, batch index) by `MiniBatches`, so no RNG state needs saving: resuming
/// at `step` replays exactly the run that was interrupted.
public enum Checkpoint {
    public static let format = "dynamic-inference-checkpoint/1"
    static let reservedKeys: Set<String> = ["format", "epoch", "step"]

    public static func save(model: Module, optimizer: (any Optimizer)?, info: CheckpointInfo,
                            to url: URL) throws(CheckpointError) {
        precondition(reservedKeys.isDisjoint(with: info.metadata.keys), "metadata keys \(reservedKeys) are reserved")
        var tensors: [String: Tensor] = [:]
        for (k, t) in model.stateDict() { tensors["model." + k] = t }
        for (k, t) in optimizer?.stateDict() ?? [:] { tensors["optimizer." + k] = t }
        var meta = info.metadata
        meta["format"] = format
        meta["epoch"] = String(info.epoch)
        meta["step"] = String(info.step)
        do { try SafeTensors.write(tensors, metadata: meta, to: url) } catch { throw .file(error) }
    }

    /// Loads model and optimizer state from `url`. Either both load or neither changes.
    @discardableResult
    public static func load(from url: URL, model: Module, optimizer: (any Optimizer)?) throws(CheckpointError) -> CheckpointInfo {
        let file: SafeTensorsFile
        do { file = try SafeTensors.read(contentsOf: url) } catch { throw .file(error) }
        var meta = file.metadata
        guard meta["format"] == format else {
            throw .notACheckpoint(path: url.path, reason: "metadata format is \(meta["format"] ?? "missing"), not \(format)")
        }
        guard let epoch = meta["epoch"].flatMap({ Int($0) }), let step = meta["step"].flatMap({ Int($0) }) else {
            throw .notACheckpoint(path: url.path, reason: "metadata epoch/step missing or not integers")
        }
        for k in reservedKeys { meta[k] = nil }
        var modelState: [String: Tensor] = [:], optimizerState: [String: Tensor] = [:]
        for (k, t) in file.tensors {
            if k.hasPrefix("model.") { modelState[String(k.dropFirst(6))] = t }
            else if k.hasPrefix("optimizer.") { optimizerState[String(k.dropFirst(10))] = t }
            else { throw .notACheckpoint(path: url.path, reason: "tensor \"\(k)\" is neither model. nor optimizer.") }
        }
        if let optimizer {
            let previous = optimizer.stateDict()
            do { try optimizer.loadStateDict(optimizerState) } catch { throw .optimizer(error) }
            do { try model.loadStateDict(modelState) } catch {
                try? optimizer.loadStateDict(previous)
                throw .model(error)
            }
        } else {
            do { try model.loadStateDict(modelState) } catch { throw .model(error) }
        }
        return CheckpointInfo(epoch: epoch, step: step, metadata: meta)
    }
}
