import DynamicCore
import Foundation

extension Module {
    /// Writes every parameter and buffer as F32 safetensors under its state_dict key, so
    /// `safetensors.torch.load_file` + `model.load_state_dict(strict=False)` reads it in PyTorch
    /// (PyTorch only adds its integer `num_batches_tracked` counters).
    public func save(to url: URL, metadata: [String: String] = [:]) throws {
        try SafeTensors.write(stateDict(), metadata: metadata, to: url)
    }

    /// Loads a safetensors file written by us or by PyTorch (`save_file(model.state_dict())`).
    /// Integer entries (PyTorch's `num_batches_tracked`) are skipped; F16/BF16/F64 are widened.
    /// Strict loading throws `StateDictError.incompatible` with the full report and changes nothing.
    @discardableResult
    public func load(from url: URL, strict: Bool = true) throws -> StateDictLoadReport {
        let file = try SafeTensors.read(contentsOf: url)
        return try loadStateDict(file.tensors, strict: strict)
    }
}
