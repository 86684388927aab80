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

// MARK: - Decoding

extension SafeTensors {
    /// A header entry that passed validation; offsets are relative to the data buffer.
    private struct Entry {
        var name: String
        var dtype: SafeTensorsDType
        var shape: [Int]
        var count: Int
        var begin: Int
        var end: Int
    }

    static func decode(_ raw: UnsafeRawBufferPointer) throws(SafeTensorsError) -> SafeTensorsFile {
        guard raw.count >= 8, let base = raw.baseAddress else { throw .fileTooShort(byteCount: raw.count) }
        let headerLength = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        guard headerLength <= UInt64(maxHeaderLength) else {
            throw .headerTooLarge(headerLength: headerLength, limit: maxHeaderLength)
        }
        let available = raw.count - 8
        guard headerLength <= UInt64(available) else {
            throw .headerLengthExceedsFile(headerLength: headerLength, available: available)
        }
        let n = Int(headerLength)
        let headerBytes = UnsafeRawBufferPointer(start: base + 8, count: n)
        let dataStart = base + 8 + n
        let dataLength = available - n

        let (metadata, entries) = try parseHeader(headerBytes, dataLength: dataLength)
        let ordered = try checkLayout(entries, dataLength: dataLength)

        var file = SafeTensorsFile()
        file.metadata = metadata
        file.names = ordered.map(\.name)
        for entry in ordered {
            file.dtypes[entry.name] = entry.dtype
            let src = UnsafeRawPointer(dataStart + entry.begin)
            if entry.dtype.isFloatingPoint {
                file.tensors[entry.name] = floatTensor(entry, src)
            } else {
                file.integerEntries[entry.name] = SafeTensorsIntegerEntry(
                    dtype: entry.dtype, shape: entry.shape, values: integerValues(entry, src))
            }
        }
        return file
    }

    /// Validates the header JSON and every entry on its own (types, shape arithmetic, bounds).
    private static func parseHeader(_ bytes: UnsafeRawBufferPointer, dataLength: Int)
        throws(SafeTensorsError) -> (metadata: [String: String], entries: [Entry])
    {
        // JSONSerialization would report bad UTF-8 as a generic JSON error; check first.
        guard isValidUTF8(bytes) else { throw .headerNotUTF8 }
        let json: Any
        do {
            json = try JSONSerialization.jsonObject(with: Data(bytes), options: [])
        } catch {
            let reason = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String
            throw .headerNotJSON(reason: reason ?? error.localizedDescription)
        }
        guard let object = json as? [String: Any] else { throw .headerNotObject }
        // JSONSerialization silently keeps the last of duplicated keys.
        if let dup = firstDuplicateKey(in: bytes) { throw .duplicateKey(key: dup.key, parent: dup.parent) }

        var metadata: [String: String] = [:]
        if let value = object[metadataKey], !(value is NSNull) {
            guard let dict = value as? [String: Any] else { throw .metadataNotObject }
            for key in dict.keys.sorted() {
                guard let string = dict[key] as? String else { throw .metadataValueNotString(key: key) }
                metadata[key] = string
            }
        }

        var entries: [Entry] = []
        entries.reserveCapacity(object.count)
        for name in object.keys.sorted() where name != metadataKey {
            entries.append(try parseEntry(name: name, object[name]!, dataLength: dataLength))
        }
        return (metadata, entries)
    }

    private static func parseEntry(name: String, _ value: Any, dataLength: Int)
        throws(SafeTensorsError) -> Entry
    {
        guard let fields = value as? [String: Any] else { throw .entryNotObject(name: name) }
        guard let dtypeValue = fields["dtype"] else { throw .missingField(name: name, field: "dtype") }
        guard let shapeValue = fields["shape"] else { throw .missingField(name: name, field: "shape") }
        guard let offsetsValue = fields["data_offsets"] else { throw .missingField(name: name, field: "data_offsets") }

        guard let dtypeString = dtypeValue as? String else {
            throw .invalidField(name: name, field: "dtype", reason: "expected a string")
        }
        guard let dtype = SafeTensorsDType(rawValue: dtypeString) else {
            throw .unknownDType(name: name, dtype: dtypeString)
        }

        guard let dims = shapeValue as? [Any] else {
            throw .invalidField(name: name, field: "shape", reason: "expected an array of integers")
        }
        var shape: [Int] = []
        shape.reserveCapacity(dims.count)
        for (i, dim) in dims.enumerated() {
            guard let d = jsonInteger(dim) else {
                throw .invalidField(name: name, field: "shape", reason: "dimension \(i) is not an integer")
            }
            shape.append(d)
        }
        guard shape.allSatisfy({ $0 >= 0 }) else { throw .negativeDimension(name: name, shape: shape) }

        guard let offsets = offsetsValue as? [Any], offsets.count == 2 else {
            throw .invalidField(name: name, field: "data_offsets", reason: "expected [begin, end]")
        }
        guard let begin = jsonInteger(offsets[0]), let end = jsonInteger(offsets[1]) else {
            throw .invalidField(name: name, field: "data_offsets", reason: "offsets must be integers")
        }
        guard begin >= 0, end >= 0 else {
            throw .invalidField(name: name, field: "data_offsets", reason: "offsets must be non-negative")
        }
        guard begin <= end else { throw .invalidOffsets(name: name, begin: begin, end: end) }
        guard end <= dataLength else {
            throw .offsetsOutOfRange(name: name, begin: begin, end: end, dataLength: dataLength)
        }

        // Multiply left to right exactly as `Tensor.count(of:)` does, so a shape accepted
        // here can never trap there (e.g. [huge, huge, 0]).
        var count = 1
        for d in shape {
            let (product, overflow) = count.multipliedReportingOverflow(by: d)
            guard !overflow else { throw .shapeOverflow(name: name, shape: shape) }
            count = product
        }
        let (expected, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow else { throw .shapeOverflow(name: name, shape: shape) }
        guard expected == end - begin else {
            throw .byteLengthMismatch(name: name, expected: expected, actual: end - begin)
        }
        return Entry(name: name, dtype: dtype, shape: shape, count: count, begin: begin, end: end)
    }

    /// Checks that the entries tile the data buffer exactly; returns them in buffer order.
    private static func checkLayout(_ entries: [Entry], dataLength: Int) throws(SafeTensorsError) -> [Entry] {
        let ordered = entries.sorted { ($0.begin, $0.end, $0.name) < ($1.begin, $1.end, $1.name) }
        var cursor = 0
        var owner = ""  // entry whose end set `cursor`; only read once cursor > 0
        for entry in ordered {
            if entry.begin < cursor { throw .overlappingTensors(first: owner, second: entry.name) }
            if entry.begin > cursor { throw .dataGap(begin: cursor, end: entry.begin) }
            if entry.end > cursor {
                cursor = entry.end
                owner = entry.name
            }
        }
        if cursor < dataLength { throw .trailingBytes(begin: cursor, count: dataLength - cursor) }
        return ordered
    }

    /// A JSON integer as `Int`, or nil for floats (even 3.0), booleans and out-of-range
    /// values. JSONSerialization hands back NSNumber for all three, and `as? Int` would
    /// happily convert `true` and `3.0`, so inspect the stored type instead.
    private static func jsonInteger(_ value: Any) -> Int? {
        guard let number = value as? NSNumber, !(value is String) else { return nil }
        switch String(cString: number.objCType) {
        case "s", "i", "l", "q": return Int(exactly: number.int64Value)
        case "S", "I", "L", "Q": return Int(exactly: number.uint64Value)
        default: return nil  // "c" (Bool), "d"/"f" (floating point), anything else
        }
    }

    private static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        // Fast path: pure ASCII, the usual case for headers.
        if !bytes.contains(where: { $0 >= 0x80 }) { return true }
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }

    /// Finds the first key repeated within one JSON object. `bytes` must already have parsed
    /// as JSON; the scan is iterative and bounds-checked, so it is safe on any input anyway.
    /// Keys compare as Swift strings (canonical equivalence), matching how they would
    /// collide in the decoded dictionary.
    static func firstDuplicateKey(in bytes: UnsafeRawBufferPointer) -> (key: String, parent: String?)? {
        struct Frame {
            var isObject: Bool
            var expectingKey: Bool
            var keys: Set<String> = []
            var lastKey: String?
            var parent: String?
        }
        let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
        var stack: [Frame] = []
        var i = 0
        while i < bytes.count {
            switch bytes[i] {
            case quote:
                var j = i + 1
                var escaped = false
                while j < bytes.count, bytes[j] != quote {
                    if bytes[j] == backslash { escaped = true; j += 1 }
                    j += 1
                }
                let end = min(j, bytes.count)
                let top = stack.count - 1
                if top >= 0, stack[top].isObject, stack[top].expectingKey {
                    let key = decodeKey(UnsafeRawBufferPointer(rebasing: bytes[(i + 1)..<max(i + 1, end)]), escaped: escaped)
                    if !stack[top].keys.insert(key).inserted { return (key, stack[top].parent) }
                    stack[top].expectingKey = false
                    stack[top].lastKey = key
                }
                i = end
            case UInt8(ascii: "{"):
                stack.append(Frame(isObject: true, expectingKey: true, parent: stack.last?.lastKey))
            case UInt8(ascii: "["):
                stack.append(Frame(isObject: false, expectingKey: false, parent: stack.last?.lastKey))
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                _ = stack.popLast()
            case UInt8(ascii: ","):
                if let top = stack.indices.last, stack[top].isObject { stack[top].expectingKey = true }
            default:
                break
            }
            i += 1
        }
        return nil
    }

    private static func decodeKey(_ raw: UnsafeRawBufferPointer, escaped: Bool) -> String {
        let plain = String(decoding: raw, as: UTF8.self)
        guard escaped else { return plain }
        // Let the JSON parser resolve escapes such as \u0061 so equal keys compare equal.
        let quoted = Data([UInt8(ascii: "\"")] + Array(raw) + [UInt8(ascii: "\"")])
        return (try? JSONSerialization.jsonObject(with: quoted, options: .fragmentsAllowed)) as? String ?? plain
    }

    // MARK: Element conversion

    private static func floatTensor(_ entry: Entry, _ src: UnsafeRawPointer) -> Tensor {
        Tensor(shape: entry.shape) { dst in
            guard let out = dst.baseAddress, entry.count > 0 else { return }
            let n = entry.count
            switch entry.dtype {
            case .F32:
                #if _endian(little)
                UnsafeMutableRawPointer(out).copyMemory(from: src, byteCount: n * 4)
                #else
                for i in 0..<n {
                    out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)))
                }
                #endif
            case .F16:
                for i in 0..<n {
                    out[i] = halfToFloat(UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))
                }
            case .BF16:
                for i in 0..<n {
                    let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
                    out[i] = Float(bitPattern: UInt32(bits) << 16)
                }
            case .F64:
                for i in 0..<n {
                    let bits = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self))
                    out[i] = Float(Double(bitPattern: bits))
                }
            case .I64, .I32, .I16, .I8, .U8, .BOOL:
                preconditionFailure("integer dtype routed to floatTensor")
            }
        }
    }

    private static func integerValues(_ entry: Entry, _ src: UnsafeRawPointer) -> [Int64] {
        let n = entry.count
        return [Int64](unsafeUninitializedCapacity: n) { out, initialized in
            switch entry.dtype {
            case .I64:
                for i in 0..<n { out[i] = Int64(littleEndian: src.loadUnaligned(fromByteOffset: 8 * i, as: Int64.self)) }
            case .I32:
                for i in 0..<n { out[i] = Int64(Int32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: Int32.self))) }
            case .I16:
                for i in 0..<n { out[i] = Int64(Int16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: Int16.self))) }
            case .I8:
                for i in 0..<n { out[i] = Int64(src.load(fromByteOffset: i, as: Int8.self)) }
            case .U8:
                for i in 0..<n { out[i] = Int64(src.load(fromByteOffset: i, as: UInt8.self)) }
            case .BOOL:
                for i in 0..<n { out[i] = src.load(fromByteOffset: i, as: UInt8.self) == 0 ? 0 : 1 }
            case .F64, .F32, .F16, .BF16:
                preconditionFailure("floating dtype routed to integerValues")
            }
            initialized = n
        }
    }

    /// IEEE binary16 → binary32, exact for every bit pattern (NaN payloads shift up
    /// unchanged, as numpy does; no hardware quieting).
    @inline(__always)
    static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exponent = UInt32(h >> 10) & 0x1F
        let mantissa = UInt32(h & 0x3FF)
        if exponent == 0x1F {  // ±inf / NaN
            return Float(bitPattern: sign | 0x7F80_0000 | (mantissa << 13))
        }
        if exponent != 0 {  // normal: rebias 15 → 127
            return Float(bitPattern: sign | ((exponent + 112) << 23) | (mantissa << 13))
        }
        // ±0 and subnormals: mantissa × 2⁻²⁴ is exact in binary32 (and a normal number there).
        let magnitude = Float(mantissa) * 0x1p-24
        return Float(bitPattern: sign | magnitude.bitPattern)
    }

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
