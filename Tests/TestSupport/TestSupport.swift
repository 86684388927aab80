import DynamicCore
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
