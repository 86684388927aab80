import Foundation
import XCTest

/// The generated microkernels (`Sources/DynamicCore/Blocked/Generated/`) are what their generator
/// scripts write today: each script runs into a temporary folder and the files must be equal, so
/// a hand edit or a generator change without regeneration fails here. Skipped where python3 is
/// missing (the kernels themselves are tested against their references either way).
final class GeneratedKernelsTests: XCTestCase {
    func testGeneratedKernelsMatchTheirGenerators() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"].first { FileManager.default.isExecutableFile(atPath: $0) }
        guard let python else { throw XCTSkip("python3 is not installed") }
        let generated = root.appendingPathComponent("Sources/DynamicCore/Blocked/Generated")
        let tmp = FileManager.default.temporaryDirectory.appendingPathComponent("generated-\(UUID())")
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: tmp) }
        for script in ["generate_wide_kernels.py", "generate_winograd_kernels.py"] {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: python)
            p.arguments = [root.appendingPathComponent("scripts/\(script)").path, tmp.path]
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            p.waitUntilExit()
            XCTAssertEqual(p.terminationStatus, 0, "\(script) failed")
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: generated.path).filter { $0.hasSuffix(".swift") }.sorted()
        XCTAssertEqual(files, ["WideConvKernels.swift", "WideConvWeightGradientKernels.swift", "WinogradKernels.swift"])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp.path).sorted(), files,
                       "the generators write other files than the folder holds")
        for f in files {
            let committed = try Data(contentsOf: generated.appendingPathComponent(f))
            let fresh = try Data(contentsOf: tmp.appendingPathComponent(f))
            XCTAssertEqual(committed, fresh, "\(f) differs from what its generator writes: regenerate it, do not edit it")
        }
    }
}
