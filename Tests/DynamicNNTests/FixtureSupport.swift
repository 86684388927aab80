import DynamicCore
import Foundation
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN
import XCTest

/// Directory of the committed fixtures (made by scripts/make_fixtures.py).
let fixturesURL: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

func loadFixture(_ relativePath: String) throws -> SafeTensorsFile {
    try SafeTensors.read(contentsOf: fixturesURL.appendingPathComponent(relativePath))
}

/// Asserts max |a − b| / max |b| ≤ tol and returns the error for reporting.
@discardableResult
func assertClose(_ a: Tensor, _ b: Tensor, tol: Float, _ msg: @autoclosure () -> String = "",
                 file: StaticString = #filePath, line: UInt = #line) -> Float {
    XCTAssertEqual(a.shape, b.shape, "shape " + msg(), file: file, line: line)
    guard a.shape == b.shape else { return .infinity }
    let e = a.maxRelativeError(b)
    XCTAssert(e <= tol, "relative error \(e) > \(tol) \(msg())", file: file, line: line)
    return e
}
