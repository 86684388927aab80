import Foundation

/// Reference-counted, 64-byte-aligned Float32 buffer behind `Tensor`.
public final class TensorStorage: @unchecked Sendable {
    public let count: Int
    public let pointer: UnsafeMutablePointer<Float>

    public init(count: Int) {
        precondition(count >= 0, "negative element count")
        self.count = count
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(count, 1) * 4, alignment: 64)
        pointer = raw.bindMemory(to: Float.self, capacity: max(count, 1))
    }

    deinit { UnsafeMutableRawPointer(pointer).deallocate() }
}

/// A dense, row-major Float32 tensor of any rank. Images are NCHW.
///
/// Value semantics with copy-on-write: copies share storage until one is mutated, and
/// batch slices (`batch(_:)`) are views into the parent's storage, so nothing is copied on
/// the hot path. Kernels work on raw pointers through `withUnsafe…` accessors.
public struct Tensor: Sendable {
    public private(set) var shape: [Int]
    @usableFromInline var storage: TensorStorage
    @usableFromInline var offset: Int

    /// Number of elements (product of `shape`; 1 for a scalar of shape `[]`).
    public var count: Int { Tensor.count(of: shape) }
    public var rank: Int { shape.count }

    public static func count(of shape: [Int]) -> Int { shape.reduce(1, *) }

    /// Uninitialized-looking but zero-filled tensor of the given shape.
    public init(zeros shape: [Int]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        self.shape = shape
        let n = Tensor.count(of: shape)
        storage = TensorStorage(count: n)
        offset = 0
        storage.pointer.initialize(repeating: 0, count: n)
    }

    public init(shape: [Int], repeating value: Float) {
        self.init(zeros: shape)
        if value != 0 { storage.pointer.update(repeating: value, count: count) }
    }

    /// Tensor with the given elements in row-major order. `scalars.count` must equal the
    /// product of `shape`.
    public init(shape: [Int], scalars: [Float]) {
        precondition(Tensor.count(of: shape) == scalars.count,
                     "shape \(shape) needs \(Tensor.count(of: shape)) scalars, got \(scalars.count)")
        self.init(zeros: shape)
        scalars.withUnsafeBufferPointer { storage.pointer.update(from: $0.baseAddress!, count: scalars.count) }
    }

    /// Tensor whose contents are written by `body` (the buffer starts zeroed).
    public init(shape: [Int], initializer body: (UnsafeMutableBufferPointer<Float>) throws -> Void) rethrows {
        self.init(zeros: shape)
        try body(UnsafeMutableBufferPointer(start: storage.pointer, count: count))
    }

    /// A scalar tensor of shape `[]`.
    public init(_ scalar: Float) { self.init(shape: [], scalars: [scalar]) }

    init(shape: [Int], storage: TensorStorage, offset: Int) {
        self.shape = shape
        self.storage = storage
        self.offset = offset
    }

    // MARK: - Raw access

    @inlinable
    public func withUnsafeBufferPointer<R>(_ body: (UnsafeBufferPointer<Float>) throws -> R) rethrows -> R {
        try body(UnsafeBufferPointer(start: storage.pointer + offset, count: count))
    }

    /// Mutable access; copies the storage first if it is shared (copy-on-write).
    @inlinable
    public mutating func withUnsafeMutableBufferPointer<R>(
        _ body: (UnsafeMutableBufferPointer<Float>) throws -> R
    ) rethrows -> R {
        makeUnique()
        return try body(UnsafeMutableBufferPointer(start: storage.pointer + offset, count: count))
    }

    @inlinable
    public mutating func makeUnique() {
        if !isKnownUniquelyReferenced(&storage) || storage.count != count {
            let fresh = TensorStorage(count: count)
            fresh.pointer.initialize(from: storage.pointer + offset, count: count)
            storage = fresh
            offset = 0
        }
    }

    /// The elements in row-major order.
    public var scalars: [Float] { withUnsafeBufferPointer { Array($0) } }

    /// Element at a full multi-index (slow; for tests and debugging).
    public subscript(_ index: Int...) -> Float {
        get { withUnsafeBufferPointer { $0[flatIndex(index)] } }
        set {
            let i = flatIndex(index)
            withUnsafeMutableBufferPointer { $0[i] = newValue }
        }
    }

    func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index rank \(index.count) ≠ tensor rank \(shape.count)")
        var flat = 0
        for (i, d) in zip(index, shape) {
            precondition(i >= 0 && i < d, "index \(index) out of range for shape \(shape)")
            flat = flat * d + i
        }
        return flat
    }

    // MARK: - Shape

    /// Same elements, new shape (no copy). One dimension may be -1 and is inferred.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        var s = newShape
        if let k = s.firstIndex(of: -1) {
            let rest = s.enumerated().filter { $0.offset != k }.map(\.element).reduce(1, *)
            precondition(rest > 0 && count % rest == 0, "cannot infer -1 in \(newShape) for \(count) elements")
            s[k] = count / rest
        }
        precondition(Tensor.count(of: s) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(shape: s, storage: storage, offset: offset)
    }

    /// `[N, ...]` → `[N, product(rest)]` (no copy).
    public func flattened() -> Tensor {
        precondition(rank >= 1)
        return reshaped([shape[0], shape.count == 1 ? 1 : shape.dropFirst().reduce(1, *)])
    }

    /// Samples `range` along the first (batch) axis, as a view sharing storage.
    public func batch(_ range: Range<Int>) -> Tensor {
        precondition(rank >= 1 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "batch range \(range) out of bounds for shape \(shape)")
        let per = shape.dropFirst().reduce(1, *)
        var s = shape
        s[0] = range.count
        return Tensor(shape: s, storage: storage, offset: offset + range.lowerBound * per)
    }

    /// Sample `i` along the batch axis, keeping the batch dimension (`[1, ...]`).
    public func batch(_ i: Int) -> Tensor { batch(i..<(i + 1)) }

    /// Stacks tensors of equal shape `[n_i, ...]` along the batch axis.
    public static func concatBatch(_ parts: [Tensor]) -> Tensor {
        precondition(!parts.isEmpty)
        let tail = Array(parts[0].shape.dropFirst())
        precondition(parts.allSatisfy { Array($0.shape.dropFirst()) == tail }, "concatBatch: mismatched shapes")
        let n = parts.reduce(0) { $0 + $1.shape[0] }
        return Tensor(shape: [n] + tail) { out in
            var p = out.baseAddress!
            for t in parts {
                t.withUnsafeBufferPointer { p.update(from: $0.baseAddress!, count: $0.count) }
                p += t.count
            }
        }
    }

    /// The tensor with its last axis reversed: for NCHW images, each image mirrored left–right
    /// (the horizontal flip of test-time augmentation). Shape unchanged, rank ≥ 1.
    public func flippedHorizontally() -> Tensor {
        precondition(rank >= 1)
        let w = shape[rank - 1]
        return withUnsafeBufferPointer { s in
            Tensor(shape: shape) { d in
                guard w > 0 else { return }
                for row in stride(from: 0, to: s.count, by: w) {
                    for x in 0..<w { d[row + x] = s[row + w - 1 - x] }
                }
            }
        }
    }

    // MARK: - Elementwise

    /// Applies `f` to every element, returning a new tensor.
    @inlinable
    public func map(_ f: (Float) -> Float) -> Tensor {
        let src = self
        return src.withUnsafeBufferPointer { s in
            Tensor(shape: shape) { d in for i in 0..<s.count { d[i] = f(s[i]) } }
        }
    }

    /// Combines equal-shape tensors elementwise.
    @inlinable
    public func zipMap(_ other: Tensor, _ f: (Float, Float) -> Float) -> Tensor {
        precondition(shape == other.shape, "shape mismatch \(shape) vs \(other.shape)")
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                Tensor(shape: shape) { d in for i in 0..<a.count { d[i] = f(a[i], b[i]) } }
            }
        }
    }

    public static func + (a: Tensor, b: Tensor) -> Tensor { Elementwise.add(a, b) }
    public static func - (a: Tensor, b: Tensor) -> Tensor { a.zipMap(b, -) }
    public static func * (a: Tensor, b: Tensor) -> Tensor { Elementwise.mul(a, b) }
    public static func * (a: Tensor, s: Float) -> Tensor { Elementwise.scale(a, s) }
    public static func * (s: Float, a: Tensor) -> Tensor { Elementwise.scale(a, s) }
    public static func += (a: inout Tensor, b: Tensor) { Elementwise.addInPlace(&a, b) }

    public func scaled(by s: Float) -> Tensor { Elementwise.scale(self, s) }

    public func sum() -> Float { withUnsafeBufferPointer { $0.reduce(0, +) } }
    public func mean() -> Float { count == 0 ? 0 : sum() / Float(count) }
    public func max() -> Float { withUnsafeBufferPointer { $0.max() ?? -.infinity } }
    public func min() -> Float { withUnsafeBufferPointer { $0.min() ?? .infinity } }

    /// Index of the largest value along the last axis, for each row: `[..., C]` → one Int per row.
    public func argmax() -> [Int] {
        precondition(rank >= 1 && shape[rank - 1] > 0)
        let c = shape[rank - 1]
        return withUnsafeBufferPointer { p in
            (0..<(count / c)).map { r in
                var best = 0
                var v = p[r * c]
                for j in 1..<c where p[r * c + j] > v { v = p[r * c + j]; best = j }
                return best
            }
        }
    }

    // MARK: - Comparison helpers

    /// Largest |a - b| over all elements.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "shape mismatch \(shape) vs \(other.shape)")
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                var m: Float = 0
                for i in 0..<a.count { m = Swift.max(m, abs(a[i] - b[i])) }
                return m
            }
        }
    }

    /// max |a - b| / max(max |b|, tiny): the error relative to the reference's scale, robust
    /// to elements that happen to be near zero. `self` is the candidate, `reference` the oracle.
    public func maxRelativeError(_ reference: Tensor) -> Float {
        let scale = reference.withUnsafeBufferPointer { $0.reduce(Float(0)) { Swift.max($0, abs($1)) } }
        return maxAbsDifference(reference) / Swift.max(scale, 1e-30)
    }

    /// True when every |a - b| ≤ atol + rtol·|b|; NaNs never compare close.
    public func isClose(to other: Tensor, rtol: Float = 1e-5, atol: Float = 1e-6) -> Bool {
        guard shape == other.shape else { return false }
        return withUnsafeBufferPointer { a in
            other.withUnsafeBufferPointer { b in
                for i in 0..<a.count where !(abs(a[i] - b[i]) <= atol + rtol * abs(b[i])) { return false }
                return true
            }
        }
    }
}

extension Tensor: CustomStringConvertible {
    public var description: String {
        let head = scalars.prefix(8).map { String(format: "%.4g", $0) }.joined(separator: ", ")
        return "Tensor(\(shape), [\(head)\(count > 8 ? ", …" : "")])"
    }
}
