import DynamicCore

/// A learnable tensor or a buffer (running statistics), shared by reference between the module
/// that owns it and optimizers. `version` changes on every write, so derived data (folded
/// or packed weights) knows when to rebuild.
public final class Parameter: @unchecked Sendable {
    public var value: Tensor { didSet { version &+= 1 } }
    /// Accumulated gradient, same shape as `value` (nil until a backward pass writes it).
    public var grad: Tensor?
    /// False for buffers such as BatchNorm running statistics: saved, loaded, never optimized.
    public let isTrainable: Bool
    public private(set) var version: UInt64 = 0

    public init(_ value: Tensor, trainable: Bool = true) {
        self.value = value
        self.isTrainable = trainable
    }

    public var shape: [Int] { value.shape }
}

/// Base class of every layer and model: an explicit tree of named children and named
/// parameters (no reflection). Keys are dotted paths matching PyTorch's `state_dict` names
/// for the same architecture (`layer1.0.conv1.weight`).
open class Module {
    /// Training mode flag; set on a whole tree with `train()` / `eval()`.
    public private(set) var isTraining = true

    public init() {}

    /// This module's own parameters and buffers, in PyTorch's registration order.
    open var ownParameters: [(String, Parameter)] { [] }

    /// Direct children in registration order.
    open var children: [(String, Module)] { [] }

    /// Puts the whole tree in training mode (BatchNorm uses batch statistics).
    @discardableResult
    public func train(_ on: Bool = true) -> Self {
        isTraining = on
        for (_, c) in children { c.train(on) }
        return self
    }

    /// Puts the whole tree in inference mode (BatchNorm uses running statistics).
    @discardableResult
    public func eval() -> Self { train(false) }

    /// Every parameter and buffer of the tree with its dotted key, in state_dict order.
    public func namedParameters(prefix: String = "") -> [(String, Parameter)] {
        var out = ownParameters.map { (prefix + $0.0, $0.1) }
        for (name, child) in children { out += child.namedParameters(prefix: prefix + name + ".") }
        return out
    }

    /// Trainable parameters only (what an optimizer updates).
    public var trainableParameters: [Parameter] { namedParameters().map(\.1).filter(\.isTrainable) }

    /// Number of trainable scalars.
    public var parameterCount: Int { trainableParameters.reduce(0) { $0 + $1.value.count } }

    /// Copies of every tensor of the tree by key (parameters and buffers).
    public func stateDict() -> [String: Tensor] {
        Dictionary(namedParameters().map { ($0.0, $0.1.value) }, uniquingKeysWith: { a, _ in a })
    }

    /// Loads tensors by key. Strict: every key must match in name and shape, or nothing is
    /// loaded and `StateDictError.incompatible` carries the report. Non-strict: loads what
    /// matches and reports the rest. Mis-shaped tensors are never loaded.
    @discardableResult
    public func loadStateDict(_ tensors: [String: Tensor], strict: Bool = true) throws(StateDictError) -> StateDictLoadReport {
        let own = namedParameters()
        var report = StateDictLoadReport()
        var ok: [(Parameter, Tensor)] = []
        let ownKeys = Set(own.map(\.0))
        for (key, p) in own {
            guard let t = tensors[key] else { report.missing.append(key); continue }
            if t.shape != p.shape {
                report.mismatched.append(.init(key: key, expected: p.shape, found: t.shape))
            } else {
                ok.append((p, t))
                report.loaded.append(key)
            }
        }
        report.unexpected = tensors.keys.filter { !ownKeys.contains($0) }.sorted()
        if strict && !report.isClean { throw .incompatible(report) }
        for (p, t) in ok { p.value = t }
        return report
    }
}

/// What `loadStateDict` matched and what it did not.
public struct StateDictLoadReport: Sendable, Equatable, CustomStringConvertible {
    public struct Mismatch: Sendable, Equatable {
        public var key: String, expected: [Int], found: [Int]
    }
    public var loaded: [String] = []
    /// Keys the module has but the source lacks.
    public var missing: [String] = []
    /// Keys the source has but the module lacks.
    public var unexpected: [String] = []
    public var mismatched: [Mismatch] = []

    public var isClean: Bool { missing.isEmpty && unexpected.isEmpty && mismatched.isEmpty }

    public var description: String {
        var lines = ["loaded \(loaded.count) tensors"]
        if !missing.isEmpty { lines.append("missing (\(missing.count)): " + missing.joined(separator: ", ")) }
        if !unexpected.isEmpty { lines.append("unexpected (\(unexpected.count)): " + unexpected.joined(separator: ", ")) }
        for m in mismatched { lines.append("shape mismatch \(m.key): model \(m.expected), file \(m.found)") }
        return lines.joined(separator: "\n")
    }
}

public enum StateDictError: Error, Equatable, CustomStringConvertible {
    case incompatible(StateDictLoadReport)
    public var description: String {
        switch self { case .incompatible(let r): return "state dict does not match the model:\n\(r)" }
    }
}

/// Wrong input from user data (as opposed to programmer errors, which `precondition`).
public enum InputError: Error, Equatable, CustomStringConvertible {
    case shapeMismatch(context: String, expected: String, found: [Int])
    public var description: String {
        switch self {
        case .shapeMismatch(let ctx, let e, let f): return "\(ctx): expected input \(e), got \(f)"
        }
    }
}

/// A module with a single-tensor forward pass.
public protocol Layer: Module {
    /// Forward pass; shapes are documented per layer.
    func callAsFunction(_ x: Tensor) -> Tensor
}
