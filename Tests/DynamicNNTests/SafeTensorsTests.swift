import Foundation
import XCTest
import DynamicCore
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN

final class SafeTensorsTests: XCTestCase {

    // MARK: - Helpers

    /// Values i*0.25 - 3 for i in 0..<count: exact in Float32 and easy to recompute in Python.
    static func ramp(_ shape: [Int]) -> Tensor {
        Tensor(shape: shape) { buf in
            for i in 0..<buf.count { buf[i] = Float(i) * 0.25 - 3 }
        }
    }

    /// A raw safetensors buffer: length prefix, header text (unpadded), data bytes.
    static func rawFile(header: String, data: [UInt8] = []) -> Data {
        let headerBytes = Array(header.utf8)
        var out = Data()
        withUnsafeBytes(of: UInt64(headerBytes.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: headerBytes)
        out.append(contentsOf: data)
        return out
    }

    static func rawFile(headerLength: UInt64, rest: [UInt8]) -> Data {
        var out = Data()
        withUnsafeBytes(of: headerLength.littleEndian) { out.append(contentsOf: $0) }
        out.append(contentsOf: rest)
        return out
    }

    static func entry(_ dtype: String, _ shape: [Int], _ begin: Int, _ end: Int) -> String {
        #"{"dtype":"\#(dtype)","shape":[\#(shape.map(String.init).joined(separator: ","))],"data_offsets":[\#(begin),\#(end)]}"#
    }

    static var fixtures: URL {
        Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("safetensors")
    }

    func assertThrows(_ data: Data, _ expected: SafeTensorsError,
                      file: StaticString = #filePath, line: UInt = #line) {
        do {
            let decoded = try SafeTensors.decode(data)
            XCTFail("expected \(expected), decoded \(decoded.names)", file: file, line: line)
        } catch {
            XCTAssertEqual(error, expected, file: file, line: line)
            XCTAssertFalse(error.description.isEmpty, file: file, line: line)
        }
    }

    func assertThrows(_ data: Data, file: StaticString = #filePath, line: UInt = #line,
                      where matches: (SafeTensorsError) -> Bool) {
        do {
            let decoded = try SafeTensors.decode(data)
            XCTFail("expected an error, decoded \(decoded.names)", file: file, line: line)
        } catch {
            XCTAssertTrue(matches(error), "unexpected error \(error)", file: file, line: line)
        }
    }

    func assertBitEqual(_ actual: Tensor?, _ expected: Tensor, _ name: String, nanPayloads: Bool = true,
                        file: StaticString = #filePath, line: UInt = #line) {
        guard let actual else { return XCTFail("missing tensor \(name)", file: file, line: line) }
        XCTAssertEqual(actual.shape, expected.shape, name, file: file, line: line)
        let a = actual.scalars, e = expected.scalars
        guard a.count == e.count else { return XCTFail("\(name): count mismatch", file: file, line: line) }
        for i in 0..<a.count {
            let same = (!nanPayloads && e[i].isNaN) ? a[i].isNaN : a[i].bitPattern == e[i].bitPattern
            if !same {
                return XCTFail("\(name)[\(i)]: got \(a[i]) (0x\(String(a[i].bitPattern, radix: 16))), "
                               + "expected \(e[i]) (0x\(String(e[i].bitPattern, radix: 16)))",
                               file: file, line: line)
            }
        }
    }

    static let trickyMetadata: [String: String] = [
        "format": "pt",
        "quotes": #"say "hi" \ and \\ \u0041"#,
        "lines": "line1\nline2\r\n\ttabbed\u{08}\u{0C}\u{01}\u{1F}\u{7F}",
        "unicode": "héllo ✓ 日本語 🚀 e\u{301}",
        "": "empty key",
        "empty value": "",
        "__metadata__": "nested reserved name is just a key here",
    ]

    // MARK: - Round trips

    func testRoundTripShapesAndMetadata() throws {
        var special = Tensor(shape: [8], scalars: [0, -0.0, .infinity, -.infinity,
                                                   .leastNonzeroMagnitude, .greatestFiniteMagnitude,
                                                   .leastNormalMagnitude, 1])
        special.withUnsafeMutableBufferPointer {
            $0[0] = Float(bitPattern: 0x7FC0_1234)  // NaN with payload
            $0[7] = Float(bitPattern: 0xFF80_0001)  // negative signalling NaN
        }
        let tensors: [String: Tensor] = [
            "scalar": Tensor(-1.75),
            "vector": Self.ramp([7]),
            "matrix": Self.ramp([3, 5]),
            "rank5": Self.ramp([2, 1, 3, 2, 2]),
            "zero": Tensor(zeros: [0]),
            "zero.inner": Tensor(zeros: [4, 0, 3]),
            "big": Self.ramp([257, 129]),
            "special": special,
            "unicode ✓ name \"quoted\"": Self.ramp([2]),
            "": Self.ramp([1]),
        ]
        let data = SafeTensors.encode(tensors, metadata: Self.trickyMetadata)
        let decoded = try SafeTensors.decode(data)

        XCTAssertEqual(decoded.metadata, Self.trickyMetadata)
        XCTAssertEqual(Set(decoded.tensors.keys), Set(tensors.keys))
        XCTAssertTrue(decoded.integerEntries.isEmpty)
        XCTAssertEqual(decoded.names, tensors.keys.sorted(), "our writer lays tensors out in name order")
        for (name, tensor) in tensors {
            assertBitEqual(decoded.tensors[name], tensor, name)
            XCTAssertEqual(decoded.dtypes[name], .F32)
        }

        // Header padded to a multiple of 8 with spaces; data exactly the tensor bytes.
        let n = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        XCTAssertEqual(n % 8, 0)
        XCTAssertEqual(data.count - 8 - n, tensors.values.reduce(0) { $0 + $1.count * 4 })
        let header = String(decoding: data[8..<(8 + n)], as: UTF8.self)
        XCTAssertTrue(header.hasPrefix("{"))
        XCTAssertTrue(header.reversed().drop { $0 == " " }.first == "}")

        // Python's json (and any spec reader) must see the same metadata: check via JSONSerialization.
        let object = try JSONSerialization.jsonObject(with: data[8..<(8 + n)]) as! [String: Any]
        XCTAssertEqual(object["__metadata__"] as? [String: String], Self.trickyMetadata)
    }

    func testEncodeLayoutIsExact() throws {
        let data = SafeTensors.encode(["b": Tensor(shape: [2], scalars: [1, -2]), "a": Tensor(0.5)],
                                      metadata: ["k": "v"])
        let header = #"{"__metadata__":{"k":"v"},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"#
            + #""b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#
        let padded = header + String(repeating: " ", count: (8 - header.utf8.count % 8) % 8)
        var expected = Self.rawFile(header: padded)
        for value: Float in [0.5, 1, -2] {
            withUnsafeBytes(of: value.bitPattern.littleEndian) { expected.append(contentsOf: $0) }
        }
        XCTAssertEqual(data, expected)
    }

    func testEmptyFileRoundTrip() throws {
        let data = SafeTensors.encode([:])
        XCTAssertEqual(data, Self.rawFile(header: "{}      "))
        let decoded = try SafeTensors.decode(data)
        XCTAssertTrue(decoded.tensors.isEmpty && decoded.names.isEmpty && decoded.metadata.isEmpty)
        // A bare "{}" (unpadded) and null metadata are also valid.
        XCTAssertTrue(try SafeTensors.decode(Self.rawFile(header: "{}")).names.isEmpty)
        XCTAssertTrue(try SafeTensors.decode(Self.rawFile(header: #"{"__metadata__":null}"#)).metadata.isEmpty)
    }

    func testDecodesDataSliceWithNonZeroStartIndex() throws {
        let file = SafeTensors.encode(["x": Self.ramp([3, 3])], metadata: ["a": "b"])
        let padded = Data([1, 2, 3]) + file + Data([9])
        let slice = padded[3..<(padded.count - 1)]
        XCTAssertNotEqual(slice.startIndex, 0)
        let decoded = try SafeTensors.decode(slice)
        assertBitEqual(decoded.tensors["x"], Self.ramp([3, 3]), "x")
        XCTAssertEqual(decoded.metadata, ["a": "b"])
    }

    func testReadWriteFiles() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("safetensors-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let url = dir.appendingPathComponent("model.safetensors")
        let tensors = ["w": Self.ramp([4, 3]), "b": Self.ramp([4])]
        try SafeTensors.write(tensors, metadata: ["format": "pt"], to: url)
        let decoded = try SafeTensors.read(contentsOf: url)
        XCTAssertEqual(decoded.metadata, ["format": "pt"])
        for (name, t) in tensors { assertBitEqual(decoded.tensors[name], t, name) }

        let missing = dir.appendingPathComponent("nope.safetensors")
        XCTAssertThrowsError(try SafeTensors.read(contentsOf: missing)) { error in
            guard case .readFailed(let path, _) = error as? SafeTensorsError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, missing.path)
        }
        let badDir = dir.appendingPathComponent("no/such/dir/x.safetensors")
        XCTAssertThrowsError(try SafeTensors.write(tensors, to: badDir)) { error in
            guard case .writeFailed(let path, _) = error as? SafeTensorsError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, badDir.path)
        }
        XCTAssertThrowsError(try SafeTensors.write(["__metadata__": Tensor(1)], to: url)) { error in
            XCTAssertEqual(error as? SafeTensorsError, .reservedName("__metadata__"))
        }
    }

    /// Writes a deterministic file for scripts/check_safetensors_interop.py when
    /// DYN_SAFETENSORS_OUT is set; otherwise (and also then) a plain round-trip test.
    func testWriteForPythonInterop() throws {
        let shapes: [(String, [Int])] = [
            ("a.weight", [3, 4]), ("b.bias", [5]), ("scalar", []), ("empty", [2, 0, 3]),
            ("rank5", [1, 2, 1, 3, 2]), ("big", [64, 33]),
        ]
        var tensors: [String: Tensor] = [:]
        for (name, shape) in shapes { tensors[name] = Self.ramp(shape) }
        tensors["specials"] = Tensor(shape: [7], scalars: [.nan, .infinity, -.infinity, -0.0,
                                                           .leastNonzeroMagnitude, .greatestFiniteMagnitude, 1e-3])
        let metadata = ["format": "pt", "producer": "DynamicNN SafeTensorsTests",
                        "note": "quote \" backslash \\ newline \n tab \t unicode é ✓ 🚀",
                        "controls": "cr\r bs\u{08} ff\u{0C} \u{01} \u{1F} del\u{7F} combining e\u{301}"]

        let decoded = try SafeTensors.decode(SafeTensors.encode(tensors, metadata: metadata))
        XCTAssertEqual(decoded.metadata, metadata)
        for (name, t) in tensors { assertBitEqual(decoded.tensors[name], t, name) }

        if let path = ProcessInfo.processInfo.environment["DYN_SAFETENSORS_OUT"], !path.isEmpty {
            try SafeTensors.write(tensors, metadata: metadata, to: URL(fileURLWithPath: path))
            print("SafeTensorsTests: wrote interop file to \(path)")
        }
    }

    // MARK: - Python-written fixture

    func testPythonWrittenFixture() throws {
        let written = try SafeTensors.read(contentsOf: Self.fixtures.appendingPathComponent("python_written.safetensors"))
        let expected = try SafeTensors.read(contentsOf: Self.fixtures.appendingPathComponent("python_expected.safetensors"))

        XCTAssertEqual(written.metadata, [
            "format": "pt",
            "producer": "scripts/make_safetensors_fixtures.py",
            "note": "quote \" backslash \\ newline \n tab \t unicode é ✓ 🚀",
        ])
        XCTAssertEqual(written.dtypes["conv.weight"], .F32)
        XCTAssertEqual(written.dtypes["half"], .F16)
        XCTAssertEqual(written.dtypes["brain"], .BF16)
        XCTAssertEqual(written.dtypes["double"], .F64)
        XCTAssertEqual(written.dtypes["layer.bn.num_batches_tracked"], .I64)
        XCTAssertEqual(Set(written.tensors.keys), Set(expected.tensors.keys))
        XCTAssertEqual(expected.tensors.count, 6)
        for (name, want) in expected.tensors {
            // F64 → F32 goes through the FPU, which may canonicalise NaN payloads.
            assertBitEqual(written.tensors[name], want, name, nanPayloads: written.dtypes[name] != .F64)
        }
        XCTAssertEqual(written.tensors["scalar"]?.shape, [])
        XCTAssertEqual(written.tensors["empty"]?.shape, [0, 3])

        let ints = written.integerEntries
        XCTAssertEqual(ints["layer.bn.num_batches_tracked"], SafeTensorsIntegerEntry(dtype: .I64, shape: [], values: [12345]))
        XCTAssertEqual(ints["ints.i64"]?.values, [.min, .max, -1, 0, 7])
        XCTAssertEqual(ints["ints.i32"], SafeTensorsIntegerEntry(dtype: .I32, shape: [2, 2],
                                                                 values: [Int64(Int32.min), Int64(Int32.max), -1, 42]))
        XCTAssertEqual(ints["ints.i16"]?.values, [-32768, 32767, -3])
        XCTAssertEqual(ints["ints.i8"]?.values, [-128, 127, -1, 0])
        XCTAssertEqual(ints["ints.u8"]?.values, [0, 1, 128, 255])
        XCTAssertEqual(ints["ints.bool"], SafeTensorsIntegerEntry(dtype: .BOOL, shape: [3], values: [1, 0, 1]))
        XCTAssertEqual(written.tensors.count + ints.count, written.names.count)

        // `names` must follow the data offsets the Python writer chose (it orders by dtype).
        let data = try Data(contentsOf: Self.fixtures.appendingPathComponent("python_written.safetensors"))
        let n = data.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        let header = try JSONSerialization.jsonObject(with: data[8..<(8 + n)]) as! [String: Any]
        let begins = written.names.map { (((header[$0] as! [String: Any])["data_offsets"] as! [Int])[0]) }
        XCTAssertEqual(begins, begins.sorted())
        XCTAssertNotEqual(written.names, written.names.sorted(), "fixture should exercise non-alphabetical layout")
    }

    // MARK: - Conversions

    func testHalfDecodingIsExactForAllBitPatterns() throws {
        let bits = (0...UInt16.max).map { $0 }
        var bytes: [UInt8] = []
        for b in bits { bytes += [UInt8(b & 0xFF), UInt8(b >> 8)] }
        let decoded = try SafeTensors.decode(Self.rawFile(header: #"{"h":\#(Self.entry("F16", [65536], 0, 131072))}"#,
                                                          data: bytes))
        let values = decoded.tensors["h"]!.scalars
        for (i, b) in bits.enumerated() {
            let sign: UInt32 = UInt32(b & 0x8000) << 16
            let exp = Int((b >> 10) & 0x1F), mant = UInt32(b & 0x3FF)
            let expected: Float
            if exp == 0x1F {
                expected = Float(bitPattern: sign | 0x7F80_0000 | mant << 13)  // payload kept, like numpy
            } else {
                let magnitude = exp == 0 ? Double(mant) * 0x1p-24 : (1 + Double(mant) / 1024) * pow(2, Double(exp - 15))
                expected = Float(bitPattern: sign | Float(magnitude).bitPattern)
            }
            if values[i].bitPattern != expected.bitPattern {
                return XCTFail("F16 0x\(String(b, radix: 16)): got \(values[i]), expected \(expected)")
            }
            #if !((os(macOS) || targetEnvironment(macCatalyst)) && arch(x86_64))
            let native = Float(Float16(bitPattern: b))
            XCTAssertTrue(native.isNaN ? values[i].isNaN : native.bitPattern == values[i].bitPattern)
            #endif
        }
    }

    func testBFloat16DecodingIsExactForAllBitPatterns() throws {
        var bytes: [UInt8] = []
        for b in 0...UInt16.max { bytes += [UInt8(b & 0xFF), UInt8(b >> 8)] }
        let decoded = try SafeTensors.decode(Self.rawFile(header: #"{"b":\#(Self.entry("BF16", [256, 256], 0, 131072))}"#,
                                                          data: bytes))
        let values = decoded.tensors["b"]!.scalars
        for b in 0...UInt16.max where values[Int(b)].bitPattern != UInt32(b) << 16 {
            return XCTFail("BF16 0x\(String(b, radix: 16)): got 0x\(String(values[Int(b)].bitPattern, radix: 16))")
        }
    }

    func testFloat64RoundsToNearestEven() throws {
        let inputs: [Double] = [1.0 / 3, 16_777_217, 16_777_219, 1e39, -1e-50, 0x1p-150, 0x1.8p-150, .nan, -0.0]
        var bytes: [UInt8] = []
        for d in inputs { withUnsafeBytes(of: d.bitPattern.littleEndian) { bytes += $0 } }
        let decoded = try SafeTensors.decode(Self.rawFile(header: #"{"d":\#(Self.entry("F64", [9], 0, 72))}"#, data: bytes))
        let v = decoded.tensors["d"]!.scalars
        XCTAssertEqual(v[0], Float(1.0 / 3))
        XCTAssertEqual(v[1], 16_777_216)
        XCTAssertEqual(v[2], 16_777_220)
        XCTAssertEqual(v[3], .infinity)
        XCTAssertEqual(v[4].bitPattern, (-0.0 as Float).bitPattern)
        XCTAssertEqual(v[5], 0)  // exactly half the smallest subnormal: ties to even (zero)
        XCTAssertEqual(v[6], .leastNonzeroMagnitude)
        XCTAssertTrue(v[7].isNaN)
        XCTAssertEqual(v[8].bitPattern, 0x8000_0000)
    }

    func testIntegerAndBoolEntries() throws {
        var bytes: [UInt8] = []
        for v: Int64 in [.min, -2, .max] { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }  // 0..<24
        for v: Int32 in [.min, 5] { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }  // 24..<32
        for v: Int16 in [-7, .max] { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }  // 32..<36
        bytes += [0x80, 0x7F]  // I8 36..<38
        bytes += [0xFF, 0x00]  // U8 38..<40
        bytes += [0, 1, 2]  // BOOL 40..<43
        let header = "{" + [
            #""a":\#(Self.entry("I64", [3], 0, 24))"#,
            #""b":\#(Self.entry("I32", [2, 1], 24, 32))"#,
            #""c":\#(Self.entry("I16", [2], 32, 36))"#,
            #""d":\#(Self.entry("I8", [2], 36, 38))"#,
            #""e":\#(Self.entry("U8", [1, 2], 38, 40))"#,
            #""f":\#(Self.entry("BOOL", [3], 40, 43))"#,
            #""g":\#(Self.entry("I64", [0, 5], 43, 43))"#,
        ].joined(separator: ",") + "}"
        let file = try SafeTensors.decode(Self.rawFile(header: header, data: bytes))
        XCTAssertTrue(file.tensors.isEmpty)
        XCTAssertEqual(file.names, ["a", "b", "c", "d", "e", "f", "g"])
        XCTAssertEqual(file.integerEntries["a"]?.values, [.min, -2, .max])
        XCTAssertEqual(file.integerEntries["b"], SafeTensorsIntegerEntry(dtype: .I32, shape: [2, 1], values: [Int64(Int32.min), 5]))
        XCTAssertEqual(file.integerEntries["c"]?.values, [-7, 32767])
        XCTAssertEqual(file.integerEntries["d"]?.values, [-128, 127])
        XCTAssertEqual(file.integerEntries["e"]?.values, [255, 0])
        XCTAssertEqual(file.integerEntries["f"]?.values, [0, 1, 1])
        XCTAssertEqual(file.integerEntries["g"], SafeTensorsIntegerEntry(dtype: .I64, shape: [0, 5], values: []))
        XCTAssertEqual(file.dtypes["f"], .BOOL)
    }

    func testDTypeSizes() {
        let sizes = Dictionary(uniqueKeysWithValues: SafeTensorsDType.allCases.map { ($0, $0.byteSize) })
        XCTAssertEqual(sizes, [.F64: 8, .F32: 4, .F16: 2, .BF16: 2, .I64: 8, .I32: 4, .I16: 2, .I8: 1, .U8: 1, .BOOL: 1])
    }

    // MARK: - Malformed input: one specific error per failure

    func testDecodeMultiMegabyteFile() throws {
        // 8 MB of F32 plus 2 MB of F16 (timing is printed for information, never asserted).
        let big = Self.ramp([2048, 1024])
        let f32 = SafeTensors.encode(["w": big])
        var bytes = [UInt8](repeating: 0, count: 2 << 20)
        for i in stride(from: 0, to: bytes.count, by: 2) { bytes[i + 1] = 0x3C }  // 1.0 in F16
        let f16 = Self.rawFile(header: #"{"h":\#(Self.entry("F16", [1 << 20], 0, 2 << 20))}"#, data: bytes)
        let start = Date()
        let a = try SafeTensors.decode(f32), b = try SafeTensors.decode(f16)
        let elapsed = Date().timeIntervalSince(start)
        XCTAssertEqual(a.tensors["w"]?.count, 2048 * 1024)
        XCTAssertEqual(a.tensors["w"]?.withUnsafeBufferPointer { $0[2_000_000] }, 2_000_000 * 0.25 - 3)
        XCTAssertEqual(b.tensors["h"]?.withUnsafeBufferPointer { $0[12345] }, 1)
        print("SafeTensorsTests: decoded 8 MB F32 + 2 MB F16 in \(String(format: "%.1f", elapsed * 1000)) ms")
    }
}
