import DynamicCore
import DynamicNN
import XCTest

// Helpers shared by the test targets (one copy, not one per target).

/// Asserts max |a − b| / max |b| ≤ tol (the error relative to the reference's scale) and returns
/// the error for reporting.
@discardableResult
public func assertClose(_ a: Tensor, _ b: Tensor, tol: Float = 1e-5, _ msg: @autoclosure () -> String = "",
                        file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(a.shape, b.shape, "shape " + msg(), file: file, line: line)
    guard a.shape == b.shape else { return .infinity }
    let e = a.maxRelativeError(b)
    XCTAssert(e <= tol, "relative error \(e) > \(tol) \(msg())", file: file, line: line)
    return e
}

/// Runs `body` once with each convolution kernel width (8- and 16-lane kernels), so both are
/// checked whatever the build's default is. The options say which to pass to the kernels.
public func forEachKernelWidth(_ body: (KernelOptions) throws -> Void) rethrows {
    for width in KernelWidth.allCases { try body(KernelOptions(width: width)) }
}

/// The weights rule of scripts/make_fixtures.py (`hash_value_for_key`) for models too large to
/// commit: every state_dict entry from `Tensor.hashUniform` seeded by its key.
public func hashWeights(_ model: Module) {
    let params = model.namedParameters()
    let shapes = Dictionary(params.map { ($0.0, $0.1.shape) }, uniquingKeysWith: { a, _ in a })
    for (key, p) in params {
        let seed = Tensor.fnv1a64(key)
        let shape = p.shape
        var (low, high): (Float, Float)
        if key.hasSuffix("running_mean") { (low, high) = (-0.1, 0.1) }
        else if key.hasSuffix("running_var") { (low, high) = (0.5, 1.5) }
        else if shape.count == 4 {
            let b = Float((6.0 / Double(shape[1] * shape[2] * shape[3])).squareRoot())
            (low, high) = (-b, b)
        } else if shape.count == 2 {
            let b = Float((1.0 / Double(shape[1])).squareRoot())
            (low, high) = (-b, b)
        } else if key.hasSuffix(".bias"), let w = shapes[String(key.dropLast(5)) + ".weight"], w.count == 2 {
            let b = Float((1.0 / Double(w[1])).squareRoot())
            (low, high) = (-b, b)
        } else if key.hasSuffix(".weight") { (low, high) = (0.5, 1.5) }
        else { (low, high) = (-0.1, 0.1) }
        p.value = Tensor.hashUniform(shape, seed: seed, low: low, high: high)
    }
}
