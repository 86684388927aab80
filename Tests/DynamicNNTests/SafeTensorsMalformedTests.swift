import Foundation
import XCTest
import DynamicCore
@testable import Backbones
@testable import DynamicData
@testable import DynamicNN

/// Malformed files: every way a safetensors header or layout can be wrong gives a typed error
/// naming the problem, never a crash.
extension SafeTensorsTests {
    func testFileTooShort() {
        for n in 0..<8 { assertThrows(Data(repeating: 0, count: n), .fileTooShort(byteCount: n)) }
    }

    func testHeaderLengthPastEndOfFile() {
        assertThrows(Self.rawFile(headerLength: 100, rest: Array("{}".utf8)),
                     .headerLengthExceedsFile(headerLength: 100, available: 2))
        assertThrows(Self.rawFile(headerLength: 1, rest: []), .headerLengthExceedsFile(headerLength: 1, available: 0))
    }

    func testHugeHeaderLength() {
        assertThrows(Self.rawFile(headerLength: .max, rest: Array("{}".utf8)),
                     .headerTooLarge(headerLength: .max, limit: SafeTensors.maxHeaderLength))
        assertThrows(Self.rawFile(headerLength: UInt64(SafeTensors.maxHeaderLength) + 1, rest: []),
                     .headerTooLarge(headerLength: UInt64(SafeTensors.maxHeaderLength) + 1, limit: SafeTensors.maxHeaderLength))
    }

    func testHeaderNotUTF8() {
        var bytes = Array(#"{"a":"#.utf8) + [0xC3, 0x28] + Array(#"}"#.utf8)  // invalid 2-byte sequence
        assertThrows(Self.rawFile(headerLength: UInt64(bytes.count), rest: bytes), .headerNotUTF8)
        bytes = Array("{}".utf8) + [0xED, 0xA0, 0x80]  // UTF-16 surrogate encoded as UTF-8
        assertThrows(Self.rawFile(headerLength: UInt64(bytes.count), rest: bytes), .headerNotUTF8)
    }

    func testHeaderNotJSON() {
        for header in ["", "{", #"{"a":}"#, "{}x", "{'a': 1}", "{}\0", String(repeating: "[", count: 10_000)] {
            assertThrows(Self.rawFile(header: header)) {
                if case .headerNotJSON = $0 { true } else { false }
            }
        }
    }

    func testHeaderNotObject() {
        for header in ["[]", "[1, 2]", #""str""#, "1", "null", "true"] {
            assertThrows(Self.rawFile(header: header)) {
                // Bare scalars may be rejected by the parser itself (fragments not allowed).
                switch $0 { case .headerNotObject, .headerNotJSON: true; default: false }
            }
        }
        assertThrows(Self.rawFile(header: "[]"), .headerNotObject)
    }

    func testDuplicateKeys() {
        let e = Self.entry("F32", [1], 0, 4)
        assertThrows(Self.rawFile(header: #"{"x":\#(e),"x":\#(e)}"#, data: [0, 0, 0, 0]),
                     .duplicateKey(key: "x", parent: nil))
        // Escapes are resolved before comparing: "\u0078" is "x".
        assertThrows(Self.rawFile(header: #"{"x":\#(e),"\u0078":\#(e)}"#, data: [0, 0, 0, 0]),
                     .duplicateKey(key: "x", parent: nil))
        assertThrows(Self.rawFile(header: #"{"x":{"dtype":"F32","shape":[1],"shape":[1],"data_offsets":[0,4]}}"#,
                                  data: [0, 0, 0, 0]),
                     .duplicateKey(key: "shape", parent: "x"))
        assertThrows(Self.rawFile(header: #"{"__metadata__":{"k":"a","k":"b"}}"#),
                     .duplicateKey(key: "k", parent: "__metadata__"))
        // Same key in different objects is fine; so are keys that only look alike inside strings.
        XCTAssertNoThrow(try SafeTensors.decode(Self.rawFile(
            header: #"{"__metadata__":{"x":"\"x\", \"x\":"},"x":\#(e)}"#, data: [0, 0, 0, 0])))
    }

    func testMetadataNotStringMap() {
        assertThrows(Self.rawFile(header: #"{"__metadata__":"text"}"#), .metadataNotObject)
        assertThrows(Self.rawFile(header: #"{"__metadata__":["a"]}"#), .metadataNotObject)
        assertThrows(Self.rawFile(header: #"{"__metadata__":{"a":"ok","n":1}}"#), .metadataValueNotString(key: "n"))
        assertThrows(Self.rawFile(header: #"{"__metadata__":{"b":true}}"#), .metadataValueNotString(key: "b"))
        assertThrows(Self.rawFile(header: #"{"__metadata__":{"c":null}}"#), .metadataValueNotString(key: "c"))
        assertThrows(Self.rawFile(header: #"{"__metadata__":{"d":{"x":"y"}}}"#), .metadataValueNotString(key: "d"))
    }

    func testEntryNotObject() {
        assertThrows(Self.rawFile(header: #"{"w":[1,2]}"#), .entryNotObject(name: "w"))
        assertThrows(Self.rawFile(header: #"{"w":"F32"}"#), .entryNotObject(name: "w"))
    }

    func testUnknownDType() {
        for dtype in ["F8_E4M3", "f32", "C64", "U64", ""] {
            assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry(dtype, [1], 0, 4))}"#, data: [0, 0, 0, 0]),
                         .unknownDType(name: "w", dtype: dtype))
        }
    }

    func testMissingFields() {
        let data: [UInt8] = [0, 0, 0, 0]
        assertThrows(Self.rawFile(header: #"{"w":{"shape":[1],"data_offsets":[0,4]}}"#, data: data),
                     .missingField(name: "w", field: "dtype"))
        assertThrows(Self.rawFile(header: #"{"w":{"dtype":"F32","data_offsets":[0,4]}}"#, data: data),
                     .missingField(name: "w", field: "shape"))
        assertThrows(Self.rawFile(header: #"{"w":{"dtype":"F32","shape":[1]}}"#, data: data),
                     .missingField(name: "w", field: "data_offsets"))
        assertThrows(Self.rawFile(header: #"{"w":{}}"#, data: data), .missingField(name: "w", field: "dtype"))
    }

    func testWrongTypedFields() {
        let data: [UInt8] = [0, 0, 0, 0]
        func check(_ dtype: String, _ shape: String, _ offsets: String, field: String,
                   file: StaticString = #filePath, line: UInt = #line) {
            let header = #"{"w":{"dtype":\#(dtype),"shape":\#(shape),"data_offsets":\#(offsets)}}"#
            assertThrows(Self.rawFile(header: header, data: data), file: file, line: line) {
                if case .invalidField(name: "w", field: field, _) = $0 { true } else { false }
            }
        }
        check("1", "[1]", "[0,4]", field: "dtype")
        check("null", "[1]", "[0,4]", field: "dtype")
        check(#"["F32"]"#, "[1]", "[0,4]", field: "dtype")
        check(#""F32""#, #""1""#, "[0,4]", field: "shape")
        check(#""F32""#, "1", "[0,4]", field: "shape")
        check(#""F32""#, "[1.0]", "[0,4]", field: "shape")
        check(#""F32""#, "[1e0]", "[0,4]", field: "shape")
        check(#""F32""#, "[true]", "[0,4]", field: "shape")
        check(#""F32""#, #"["1"]"#, "[0,4]", field: "shape")
        check(#""F32""#, "[null]", "[0,4]", field: "shape")
        check(#""F32""#, "[[1]]", "[0,4]", field: "shape")
        check(#""F32""#, "[1]", "[0,4,8]", field: "data_offsets")
        check(#""F32""#, "[1]", "[4]", field: "data_offsets")
        check(#""F32""#, "[1]", "{}", field: "data_offsets")
        check(#""F32""#, "[1]", "[false,true]", field: "data_offsets")
        check(#""F32""#, "[1]", "[0,4.0]", field: "data_offsets")
        check(#""F32""#, "[1]", #"[0,"4"]"#, field: "data_offsets")
        check(#""F32""#, "[1]", "[-4,0]", field: "data_offsets")
        check(#""F32""#, "[1]", "[0,18446744073709551615]", field: "data_offsets")
        check(#""F32""#, "[1]", "[0,1e30]", field: "data_offsets")
        // Beyond Double range: the parser itself may refuse it; either way it must throw.
        XCTAssertThrowsError(try SafeTensors.decode(Self.rawFile(
            header: #"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,1e400]}}"#, data: data)))
        check(#""F32""#, "[9223372036854775808]", "[0,4]", field: "shape")
    }

    func testNegativeDimension() {
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [-1], 0, 4))}"#, data: [0, 0, 0, 0]),
                     .negativeDimension(name: "w", shape: [-1]))
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [-2, -2], 0, 16))}"#, data: Array(repeating: 0, count: 16)),
                     .negativeDimension(name: "w", shape: [-2, -2]))
    }

    func testBeginGreaterThanEnd() {
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [1], 8, 4))}"#, data: Array(repeating: 0, count: 8)),
                     .invalidOffsets(name: "w", begin: 8, end: 4))
    }

    func testOffsetsOutOfRange() {
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [2], 0, 8))}"#, data: [0, 0, 0, 0]),
                     .offsetsOutOfRange(name: "w", begin: 0, end: 8, dataLength: 4))
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [1], 4, 8))}"#, data: [0, 0, 0, 0]),
                     .offsetsOutOfRange(name: "w", begin: 4, end: 8, dataLength: 4))
        let big = Int.max
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [1], big - 3, big))}"#, data: [0, 0, 0, 0]),
                     .offsetsOutOfRange(name: "w", begin: big - 3, end: big, dataLength: 4))
    }

    func testOverlappingOffsets() {
        let header = #"{"a":\#(Self.entry("F32", [2], 0, 8)),"b":\#(Self.entry("F32", [2], 4, 12))}"#
        assertThrows(Self.rawFile(header: header, data: Array(repeating: 0, count: 12)),
                     .overlappingTensors(first: "a", second: "b"))
        let same = #"{"p":\#(Self.entry("F32", [1], 0, 4)),"q":\#(Self.entry("F32", [1], 0, 4))}"#
        assertThrows(Self.rawFile(header: same, data: [0, 0, 0, 0]), .overlappingTensors(first: "p", second: "q"))
        // A zero-size entry inside another tensor's bytes is rejected too (as the Rust reader does).
        let inside = #"{"a":\#(Self.entry("F32", [2], 0, 8)),"z":\#(Self.entry("F32", [0], 4, 4))}"#
        assertThrows(Self.rawFile(header: inside, data: Array(repeating: 0, count: 8)),
                     .overlappingTensors(first: "a", second: "z"))
    }

    func testByteLengthMismatch() {
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [3], 0, 8))}"#, data: Array(repeating: 0, count: 8)),
                     .byteLengthMismatch(name: "w", expected: 12, actual: 8))
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F16", [2, 2], 0, 16))}"#, data: Array(repeating: 0, count: 16)),
                     .byteLengthMismatch(name: "w", expected: 8, actual: 16))
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [], 0, 0))}"#),
                     .byteLengthMismatch(name: "w", expected: 4, actual: 0))
    }

    func testShapeOverflow() {
        let huge = Int.max / 2
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [huge, huge], 0, 4))}"#, data: [0, 0, 0, 0]),
                     .shapeOverflow(name: "w", shape: [huge, huge]))
        // Element count fits, byte count does not.
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F64", [huge], 0, 8))}"#, data: Array(repeating: 0, count: 8)),
                     .shapeOverflow(name: "w", shape: [huge]))
        // A zero late in the shape does not excuse an earlier overflow (Tensor multiplies left to right).
        assertThrows(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [huge, huge, 0], 0, 0))}"#),
                     .shapeOverflow(name: "w", shape: [huge, huge, 0]))
        // …but a leading zero makes everything after it harmless.
        XCTAssertEqual(try SafeTensors.decode(Self.rawFile(header: #"{"w":\#(Self.entry("F32", [0, huge, huge], 0, 0))}"#))
                        .tensors["w"]?.count, 0)
    }

    func testHolesAndTrailingBytes() {
        let gap = #"{"a":\#(Self.entry("F32", [1], 0, 4)),"b":\#(Self.entry("F32", [1], 8, 12))}"#
        assertThrows(Self.rawFile(header: gap, data: Array(repeating: 0, count: 12)), .dataGap(begin: 4, end: 8))
        let late = #"{"a":\#(Self.entry("F32", [1], 4, 8))}"#
        assertThrows(Self.rawFile(header: late, data: Array(repeating: 0, count: 8)), .dataGap(begin: 0, end: 4))
        let short = #"{"a":\#(Self.entry("F32", [1], 0, 4))}"#
        assertThrows(Self.rawFile(header: short, data: Array(repeating: 0, count: 7)), .trailingBytes(begin: 4, count: 3))
        assertThrows(Self.rawFile(header: "{}", data: [1]), .trailingBytes(begin: 0, count: 1))
        // Appending a byte to a valid file is trailing garbage.
        var valid = SafeTensors.encode(["x": Self.ramp([2])])
        valid.append(0)
        assertThrows(valid, .trailingBytes(begin: 8, count: 1))
    }

    func testErrorDescriptionsCarryContext() {
        XCTAssertTrue(SafeTensorsError.overlappingTensors(first: "conv.w", second: "conv.b").description.contains("conv.b"))
        let mismatch = SafeTensorsError.byteLengthMismatch(name: "fc", expected: 12, actual: 8).description
        XCTAssertTrue(mismatch.contains("fc") && mismatch.contains("12") && mismatch.contains("8"))
        XCTAssertTrue(SafeTensorsError.unknownDType(name: "q", dtype: "F8_E4M3").description.contains("F8_E4M3"))
    }

    // MARK: - Robustness: never crash

    func testEveryTruncationThrows() throws {
        let ours = SafeTensors.encode(["a": Self.ramp([2, 3]), "s": Tensor(1), "z": Tensor(zeros: [0])],
                                      metadata: ["k": "v \"q\""])
        let python = try Data(contentsOf: Self.fixtures.appendingPathComponent("python_written.safetensors"))
        for file in [ours, python] {
            XCTAssertNoThrow(try SafeTensors.decode(file))
            for length in 0..<file.count {
                XCTAssertThrowsError(try SafeTensors.decode(file.prefix(length)), "prefix \(length)")
            }
        }
    }

    func testRandomCorruptionNeverCrashes() throws {
        let python = try Data(contentsOf: Self.fixtures.appendingPathComponent("python_written.safetensors"))
        let n = python.prefix(8).withUnsafeBytes { Int(UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self))) }
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(truncatingIfNeeded: state >> 33)
        }
        let alphabet = Array(#"{}[]",:0123456789-.eE"\ tfnu"#.utf8)
        var outcomes = (ok: 0, failed: 0)
        for _ in 0..<3000 {
            var bytes = [UInt8](python)
            for _ in 0..<(1 + next() % 4) {
                let at = 8 + next() % (n + 16)  // mostly header bytes, a few data bytes
                bytes[at] = next() % 3 == 0 ? UInt8(truncatingIfNeeded: next()) : alphabet[next() % alphabet.count]
            }
            do { _ = try SafeTensors.decode(Data(bytes)); outcomes.ok += 1 } catch { outcomes.failed += 1 }
        }
        XCTAssertGreaterThan(outcomes.failed, 0)
    }

}
