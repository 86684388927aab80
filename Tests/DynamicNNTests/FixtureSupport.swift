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
