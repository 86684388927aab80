import DynamicCore
import Foundation

// Reading safetensors files: header validation (typed errors for every malformed file), element
// conversion of F32/F16/BF16/F64 and integer entries.

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
}
