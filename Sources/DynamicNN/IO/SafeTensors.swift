import Foundation
import DynamicCore

// Reader and writer for the safetensors format (https://github.com/huggingface/safetensors):
//
//     [8 bytes]  N, little-endian UInt64
//     [N bytes]  UTF-8 JSON object: name → {"dtype", "shape", "data_offsets": [begin, end]},
//                plus an optional "__metadata__": {String: String}
//     [rest]     data buffer; offsets are relative to its start
//
// Validation follows the reference Rust implementation: entries must tile the data buffer
// exactly (no overlaps, holes or trailing bytes) and each byte range must match
// shape × dtype size. Every malformed input throws a `SafeTensorsError`; nothing traps.

// MARK: - Public types

/// Element types this reader understands. Raw values are the spellings used in headers.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL

    /// Bytes per element.
    public var byteSize: Int {
        switch self {
        case .F64, .I64: 8
        case .F32, .I32: 4
        case .F16, .BF16, .I16: 2
        case .I8, .U8, .BOOL: 1
        }
    }

    /// Whether entries of this type are decoded into `SafeTensorsFile.tensors` (as Float32);
    /// the others go to `SafeTensorsFile.integerEntries`.
    public var isFloatingPoint: Bool {
        switch self {
        case .F64, .F32, .F16, .BF16: true
        case .I64, .I32, .I16, .I8, .U8, .BOOL: false
        }
    }
}

/// An integer or boolean entry, widened to Int64. These exist mostly so PyTorch
/// bookkeeping such as `num_batches_tracked` can be recognised and skipped.
public struct SafeTensorsIntegerEntry: Sendable, Equatable {
    /// The dtype stored in the file (one of the non-floating types).
    public var dtype: SafeTensorsDType
    public var shape: [Int]
    /// Elements in row-major order; BOOL is 0 or 1 (any nonzero byte reads as 1).
    public var values: [Int64]

    public init(dtype: SafeTensorsDType, shape: [Int], values: [Int64]) {
        self.dtype = dtype
        self.shape = shape
        self.values = values
    }
}

/// The decoded contents of a safetensors file.
public struct SafeTensorsFile: Sendable {
    /// Every floating entry (F64/F32/F16/BF16), converted to Float32. F16 and BF16 widen
    /// bit-exactly (subnormals, ±inf and NaN payloads kept); F64 rounds to nearest-even.
    public var tensors: [String: Tensor]
    /// Every integer/boolean entry (I64/I32/I16/I8/U8/BOOL).
    public var integerEntries: [String: SafeTensorsIntegerEntry]
    /// The `__metadata__` object, or empty when the header has none.
    public var metadata: [String: String]
    /// The stored dtype of every entry, floating or not.
    public var dtypes: [String: SafeTensorsDType]
    /// All entry names in data-buffer order (ties between zero-byte entries broken by name).
    public var names: [String]

    public init(tensors: [String: Tensor] = [:], integerEntries: [String: SafeTensorsIntegerEntry] = [:],
                metadata: [String: String] = [:], dtypes: [String: SafeTensorsDType] = [:],
                names: [String] = []) {
        self.tensors = tensors
        self.integerEntries = integerEntries
        self.metadata = metadata
        self.dtypes = dtypes
        self.names = names
    }
}

/// Why a safetensors buffer or file was rejected. Offsets are relative to the data buffer.
public enum SafeTensorsError: Error, Equatable, CustomStringConvertible {
    /// Fewer than the 8 bytes needed for the header length.
    case fileTooShort(byteCount: Int)
    /// Header length above `limit` (the reference implementation's 100 MB cap).
    case headerTooLarge(headerLength: UInt64, limit: Int)
    /// Header length larger than the bytes that follow the length field.
    case headerLengthExceedsFile(headerLength: UInt64, available: Int)
    /// Header bytes are not valid UTF-8.
    case headerNotUTF8
    /// Header is not parseable JSON; `reason` comes from the parser.
    case headerNotJSON(reason: String)
    /// Header parses, but not to a JSON object.
    case headerNotObject
    /// A key occurs twice in one JSON object (`parent` is the enclosing key, nil at top level).
    case duplicateKey(key: String, parent: String?)
    /// `__metadata__` is neither an object nor null.
    case metadataNotObject
    /// A `__metadata__` value is not a string.
    case metadataValueNotString(key: String)
    /// A tensor entry is not a JSON object.
    case entryNotObject(name: String)
    /// A tensor entry lacks `dtype`, `shape` or `data_offsets`.
    case missingField(name: String, field: String)
    /// A tensor entry field has the wrong JSON type or form.
    case invalidField(name: String, field: String, reason: String)
    /// The dtype string is not one of `SafeTensorsDType`.
    case unknownDType(name: String, dtype: String)
    /// A shape dimension is negative.
    case negativeDimension(name: String, shape: [Int])
    /// The element or byte count of a shape does not fit in `Int`.
    case shapeOverflow(name: String, shape: [Int])
    /// `data_offsets` has begin > end.
    case invalidOffsets(name: String, begin: Int, end: Int)
    /// `data_offsets` reaches past the end of the data buffer.
    case offsetsOutOfRange(name: String, begin: Int, end: Int, dataLength: Int)
    /// Two entries share bytes (`first` precedes `second` in the buffer).
    case overlappingTensors(first: String, second: String)
    /// The byte range does not hold exactly shape × dtype size bytes.
    case byteLengthMismatch(name: String, expected: Int, actual: Int)
    /// Bytes `begin..<end` of the data buffer belong to no entry.
    case dataGap(begin: Int, end: Int)
    /// The last `count` bytes of the data buffer, from `begin`, belong to no entry.
    case trailingBytes(begin: Int, count: Int)
    /// Writing a tensor named `__metadata__`, which the format reserves.
    case reservedName(String)
    /// The file could not be read.
    case readFailed(path: String, reason: String)
    /// The file could not be written.
    case writeFailed(path: String, reason: String)

    public var description: String {
        switch self {
        case .fileTooShort(let n):
            "safetensors: file is \(n) bytes, shorter than the 8-byte header length"
        case .headerTooLarge(let n, let limit):
            "safetensors: header length \(n) exceeds the \(limit)-byte limit"
        case .headerLengthExceedsFile(let n, let available):
            "safetensors: header length \(n) exceeds the \(available) bytes after the length field"
        case .headerNotUTF8:
            "safetensors: header is not valid UTF-8"
        case .headerNotJSON(let reason):
            "safetensors: header is not valid JSON (\(reason))"
        case .headerNotObject:
            "safetensors: header JSON is not an object"
        case .duplicateKey(let key, let parent):
            if let parent {
                "safetensors: duplicate key \"\(key)\" in header entry \"\(parent)\""
            } else {
                "safetensors: duplicate key \"\(key)\" in header"
            }
        case .metadataNotObject:
            "safetensors: __metadata__ is not an object of strings"
        case .metadataValueNotString(let key):
            "safetensors: __metadata__ value for \"\(key)\" is not a string"
        case .entryNotObject(let name):
            "safetensors: entry \"\(name)\" is not an object"
        case .missingField(let name, let field):
            "safetensors: entry \"\(name)\" has no \"\(field)\""
        case .invalidField(let name, let field, let reason):
            "safetensors: entry \"\(name)\" has an invalid \"\(field)\": \(reason)"
        case .unknownDType(let name, let dtype):
            "safetensors: entry \"\(name)\" has unsupported dtype \"\(dtype)\""
        case .negativeDimension(let name, let shape):
            "safetensors: entry \"\(name)\" has a negative dimension in shape \(shape)"
        case .shapeOverflow(let name, let shape):
            "safetensors: entry \"\(name)\" shape \(shape) is too large"
        case .invalidOffsets(let name, let begin, let end):
            "safetensors: entry \"\(name)\" has data_offsets begin \(begin) > end \(end)"
        case .offsetsOutOfRange(let name, let begin, let end, let length):
            "safetensors: entry \"\(name)\" data_offsets [\(begin), \(end)] exceed the \(length)-byte data buffer"
        case .overlappingTensors(let first, let second):
            "safetensors: entries \"\(first)\" and \"\(second)\" overlap in the data buffer"
        case .byteLengthMismatch(let name, let expected, let actual):
            "safetensors: entry \"\(name)\" needs \(expected) bytes for its shape and dtype but spans \(actual)"
        case .dataGap(let begin, let end):
            "safetensors: data bytes \(begin)..<\(end) belong to no tensor"
        case .trailingBytes(let begin, let count):
            "safetensors: \(count) trailing data bytes from offset \(begin) belong to no tensor"
        case .reservedName(let name):
            "safetensors: tensor name \"\(name)\" is reserved"
        case .readFailed(let path, let reason):
            "safetensors: cannot read \(path): \(reason)"
        case .writeFailed(let path, let reason):
            "safetensors: cannot write \(path): \(reason)"
        }
    }
}

// MARK: - Entry points

/// Namespace for safetensors decoding and encoding.
public enum SafeTensors {
    /// Largest accepted header, as in the reference implementation; guards against
    /// absurd lengths before any allocation.
    public static let maxHeaderLength = 100_000_000

    /// The header key reserved for string metadata.
    public static let metadataKey = "__metadata__"

    /// Decodes a complete safetensors buffer, validating it fully.
    public static func decode(_ data: Data) throws(SafeTensorsError) -> SafeTensorsFile {
        // `withUnsafeBytes` only rethrows untyped errors, so carry the typed one out in a Result.
        let result: Result<SafeTensorsFile, SafeTensorsError> = data.withUnsafeBytes { raw in
            Result { () throws(SafeTensorsError) -> SafeTensorsFile in try decode(raw) }
        }
        return try result.get()
    }

    /// Reads and decodes the file at `url`.
    public static func read(contentsOf url: URL) throws(SafeTensorsError) -> SafeTensorsFile {
        let data: Data
        do {
            // Not memory-mapped: a file truncated underneath a mapping would SIGBUS.
            data = try Data(contentsOf: url)
        } catch {
            throw .readFailed(path: url.path, reason: error.localizedDescription)
        }
        return try decode(data)
    }

    /// Encodes `tensors` as F32 entries laid out in sorted-name order, with the header padded
    /// with spaces to a multiple of 8 bytes like the Python writer. Empty `metadata` writes
    /// no `__metadata__` key. A tensor may not be named `__metadata__` (a precondition; use
    /// `write` to get a thrown error instead).
    public static func encode(_ tensors: [String: Tensor], metadata: [String: String] = [:]) -> Data {
        precondition(tensors[metadataKey] == nil, "safetensors: tensor name \"\(metadataKey)\" is reserved")
        let names = tensors.keys.sorted()

        var parts: [String] = []
        parts.reserveCapacity(names.count + 1)
        if !metadata.isEmpty {
            let fields = metadata.keys.sorted().map { jsonString($0) + ":" + jsonString(metadata[$0]!) }
            parts.append(jsonString(metadataKey) + ":{" + fields.joined(separator: ",") + "}")
        }
        var dataLength = 0
        for name in names {
            let tensor = tensors[name]!
            let begin = dataLength
            dataLength += tensor.count * 4
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            parts.append(jsonString(name) + #":{"dtype":"F32","shape":["# + shape
                         + #"],"data_offsets":["# + "\(begin),\(dataLength)]}")
        }
        var header = Array(("{" + parts.joined(separator: ",") + "}").utf8)
        // Pad so the data buffer starts 8-byte aligned (8 + N ≡ 0 mod 8).
        header.append(contentsOf: repeatElement(UInt8(ascii: " "), count: (8 - header.count % 8) % 8))

        let dataStart = 8 + header.count
        var out = Data(count: dataStart + dataLength)
        out.withUnsafeMutableBytes { (raw: UnsafeMutableRawBufferPointer) in
            raw.storeBytes(of: UInt64(header.count).littleEndian, toByteOffset: 0, as: UInt64.self)
            header.withUnsafeBytes { raw.baseAddress!.advanced(by: 8).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            var offset = dataStart
            for name in names {
                tensors[name]!.withUnsafeBufferPointer { src in
                    guard let base = src.baseAddress, !src.isEmpty else { return }
                    let dst = raw.baseAddress!.advanced(by: offset)
                    #if _endian(little)
                    dst.copyMemory(from: base, byteCount: src.count * 4)
                    #else
                    for i in 0..<src.count {
                        dst.storeBytes(of: src[i].bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
                    }
                    #endif
                    offset += src.count * 4
                }
            }
        }
        return out
    }

    /// Encodes `tensors` (see `encode`) and writes them atomically to `url`.
    public static func write(_ tensors: [String: Tensor], metadata: [String: String] = [:],
                             to url: URL) throws(SafeTensorsError) {
        guard tensors[metadataKey] == nil else { throw .reservedName(metadataKey) }
        let data = encode(tensors, metadata: metadata)
        do {
            try data.write(to: url, options: .atomic)
        } catch {
            throw .writeFailed(path: url.path, reason: error.localizedDescription)
        }
    }
}

extension SafeTensors {
    // MARK: - Encoding helpers

    /// A JSON string literal for `s`: quotes, backslashes and control characters escaped,
    /// everything else emitted as raw UTF-8.
    static func jsonString(_ s: String) -> String {
        var out = "\""
        out.reserveCapacity(s.utf8.count + 2)
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\u{08}": out += "\\b"
            case "\u{0C}": out += "\\f"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default:
                out.unicodeScalars.append(scalar)
            }
        }
        out += "\""
        return out
    }
}
