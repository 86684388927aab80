/// Gzip decompression (RFC 1952 container, RFC 1951 DEFLATE), so gzip'd dataset files such as
/// Debian's Fashion-MNIST load without an external tool. Table-driven Huffman decoding;
/// CRC-32 and length of every member are verified.
enum Gzip {
    struct Failure: Error { var reason: String }

    static func isGzip(_ bytes: [UInt8]) -> Bool { bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B }

    /// Decompresses every member of a gzip stream and concatenates them.
    static func decompress(_ bytes: [UInt8]) throws(Failure) -> [UInt8] {
        var out: [UInt8] = []
        if bytes.count >= 4 {
            // ISIZE of the last member: a capacity hint (exact for single-member files < 4 GiB).
            let n = bytes.count
            out.reserveCapacity(Int(bytes[n - 4]) | Int(bytes[n - 3]) << 8 | Int(bytes[n - 2]) << 16 | Int(bytes[n - 1]) << 24)
        }
        var pos = 0
        repeat {
            pos = try member(bytes, at: pos, into: &out)
        } while pos < bytes.count
        return out
    }

    /// Decodes the member starting at `start`; returns the offset just past it.
    private static func member(_ b: [UInt8], at start: Int, into out: inout [UInt8]) throws(Failure) -> Int {
        guard b.count - start >= 18 else { throw Failure(reason: "gzip member truncated (\(b.count - start) bytes)") }
        guard b[start] == 0x1F && b[start + 1] == 0x8B else { throw Failure(reason: "not gzip data (bad magic)") }
        guard b[start + 2] == 8 else { throw Failure(reason: "gzip compression method \(b[start + 2]) is not DEFLATE") }
        let flags = b[start + 3]
        var p = start + 10
        func skipZeroTerminated() throws(Failure) {
            while p < b.count && b[p] != 0 { p += 1 }
            guard p < b.count else { throw Failure(reason: "gzip header truncated") }
            p += 1
        }
        if flags & 4 != 0 {
            guard p + 2 <= b.count else { throw Failure(reason: "gzip header truncated") }
            p += 2 + (Int(b[p]) | Int(b[p + 1]) << 8)
        }
        if flags & 8 != 0 { try skipZeroTerminated() }
        if flags & 16 != 0 { try skipZeroTerminated() }
        if flags & 2 != 0 { p += 2 }
        guard p <= b.count else { throw Failure(reason: "gzip header truncated") }
        let begin = out.count
        var reader = BitReader(bytes: b, position: p)
        try inflate(&reader, into: &out)
        p = reader.bytePositionAfterAlign()
        guard p + 8 <= b.count else { throw Failure(reason: "gzip trailer truncated") }
        let crc = UInt32(b[p]) | UInt32(b[p + 1]) << 8 | UInt32(b[p + 2]) << 16 | UInt32(b[p + 3]) << 24
        let size = UInt32(b[p + 4]) | UInt32(b[p + 5]) << 8 | UInt32(b[p + 6]) << 16 | UInt32(b[p + 7]) << 24
        guard UInt32(truncatingIfNeeded: out.count - begin) == size else {
            throw Failure(reason: "gzip length check failed (data corrupt or truncated)")
        }
        guard crc32(out[begin...]) == crc else { throw Failure(reason: "gzip CRC-32 check failed (data corrupt)") }
        return p + 8
    }

    // MARK: DEFLATE

    private struct BitReader {
        let bytes: [UInt8]
        var position: Int
        var buffer: UInt64 = 0
        var count = 0

        init(bytes: [UInt8], position: Int) {
            self.bytes = bytes
            self.position = position
        }

        /// Tops the buffer up to ≥ 56 bits where input remains.
        @inline(__always)
        mutating func refill() {
            while count <= 56 && position < bytes.count {
                buffer |= UInt64(bytes[position]) << UInt64(count)
                position += 1
                count += 8
            }
        }

        @inline(__always)
        mutating func bits(_ n: Int) throws(Failure) -> Int {
            if count < n { refill() }
            guard count >= n else { throw Failure(reason: "DEFLATE stream truncated") }
            let v = Int(buffer & ((1 << UInt64(n)) - 1))
            buffer >>= UInt64(n)
            count -= n
            return v
        }

        mutating func alignToByte() {
            buffer >>= UInt64(count % 8)
            count -= count % 8
        }

        /// Offset of the first byte not yet consumed, after dropping the partial byte.
        mutating func bytePositionAfterAlign() -> Int {
            alignToByte()
            return position - count / 8
        }
    }

    /// Canonical Huffman code as a lookup table indexed by the next `bits` input bits
    /// (LSB first): entry = symbol << 4 | code length, 0 where no code matches.
    private struct Huffman {
        var table: [UInt16]
        var bits: Int

        init(lengths: [Int]) throws(Failure) {
            bits = lengths.max() ?? 0
            table = [UInt16](repeating: 0, count: 1 << bits)
            guard bits > 0 else { return }
            var countPerLength = [Int](repeating: 0, count: 16)
            for l in lengths where l > 0 { countPerLength[l] += 1 }
            var left = 1
            for l in 1...15 {
                left = (left << 1) - countPerLength[l]
                guard left >= 0 else { throw Failure(reason: "DEFLATE Huffman code over-subscribed") }
            }
            var next = [Int](repeating: 0, count: 16)
            var code = 0
            for l in 1...15 { next[l] = code; code = (code + countPerLength[l]) << 1 }
            for (symbol, l) in lengths.enumerated() where l > 0 {
                let c = next[l]
                next[l] += 1
                var reversed = 0
                for i in 0..<l where c & (1 << i) != 0 { reversed |= 1 << (l - 1 - i) }
                let entry = UInt16(symbol << 4 | l)
                var i = reversed
                while i < table.count { table[i] = entry; i += 1 << l }
            }
        }

        @inline(__always)
        func decode(_ r: inout BitReader) throws(Failure) -> Int {
            if r.count < bits { r.refill() }
            let entry = Int(table[Int(r.buffer & UInt64((1 << bits) - 1))])
            let l = entry & 15
            guard l > 0 && l <= r.count else { throw Failure(reason: "DEFLATE stream corrupt or truncated (bad code)") }
            r.buffer >>= UInt64(l)
            r.count -= l
            return entry >> 4
        }
    }

    private static let lengthBase = [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99,
                                     115, 131, 163, 195, 227, 258]
    private static let lengthExtra = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0]
    private static let distanceBase = [1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025,
                                       1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577]
    private static let distanceExtra = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11,
                                        12, 12, 13, 13]
    private static let codeLengthOrder = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15]

    private static func inflate(_ r: inout BitReader, into out: inout [UInt8]) throws(Failure) {
        var last = false
        while !last {
            last = try r.bits(1) == 1
            switch try r.bits(2) {
            case 0:
                r.alignToByte()
                let len = try r.bits(16), nlen = try r.bits(16)
                guard len == ~nlen & 0xFFFF else { throw Failure(reason: "DEFLATE stored block length check failed") }
                for _ in 0..<len { out.append(UInt8(try r.bits(8))) }
            case 1:
                let lit = try Huffman(lengths: [Int](repeating: 8, count: 144) + [Int](repeating: 9, count: 112)
                                      + [Int](repeating: 7, count: 24) + [Int](repeating: 8, count: 8))
                let dist = try Huffman(lengths: [Int](repeating: 5, count: 30))
                try codes(&r, lit, dist, &out)
            case 2:
                let nlit = try r.bits(5) + 257, ndist = try r.bits(5) + 1, ncode = try r.bits(4) + 4
                var clLengths = [Int](repeating: 0, count: 19)
                for i in 0..<ncode { clLengths[codeLengthOrder[i]] = try r.bits(3) }
                let cl = try Huffman(lengths: clLengths)
                var lengths: [Int] = []
                while lengths.count < nlit + ndist {
                    let sym = try cl.decode(&r)
                    switch sym {
                    case 0...15: lengths.append(sym)
                    case 16:
                        guard let prev = lengths.last else { throw Failure(reason: "DEFLATE repeat with no previous length") }
                        lengths += repeatElement(prev, count: 3 + (try r.bits(2)))
                    case 17: lengths += repeatElement(0, count: 3 + (try r.bits(3)))
                    default: lengths += repeatElement(0, count: 11 + (try r.bits(7)))
                    }
                }
                guard lengths.count == nlit + ndist else { throw Failure(reason: "DEFLATE code lengths overrun") }
                guard lengths[256] > 0 else { throw Failure(reason: "DEFLATE block has no end-of-block code") }
                try codes(&r, try Huffman(lengths: Array(lengths[0..<nlit])), try Huffman(lengths: Array(lengths[nlit...])), &out)
            default:
                throw Failure(reason: "DEFLATE block type 3 is invalid")
            }
        }
    }

    /// Literal/length + distance codes of one block, up to its end-of-block symbol.
    private static func codes(_ r: inout BitReader, _ lit: Huffman, _ dist: Huffman, _ out: inout [UInt8]) throws(Failure) {
        while true {
            let sym = try lit.decode(&r)
            if sym < 256 {
                out.append(UInt8(sym))
            } else if sym == 256 {
                return
            } else {
                let li = sym - 257
                guard li < 29 else { throw Failure(reason: "DEFLATE invalid length symbol") }
                let length = lengthBase[li] + (try r.bits(lengthExtra[li]))
                let di = try dist.decode(&r)
                guard di < 30 else { throw Failure(reason: "DEFLATE invalid distance symbol") }
                let distance = distanceBase[di] + (try r.bits(distanceExtra[di]))
                guard distance <= out.count else { throw Failure(reason: "DEFLATE distance reaches before the start") }
                let from = out.count - distance
                for i in 0..<length { out.append(out[from + i]) }
            }
        }
    }

    // MARK: CRC-32 (IEEE 802.3, reflected)

    private static let crcTable: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func crc32(_ data: ArraySlice<UInt8>) -> UInt32 {
        var c: UInt32 = 0xFFFF_FFFF
        crcTable.withUnsafeBufferPointer { t in
            for byte in data { c = t[Int((c ^ UInt32(byte)) & 0xFF)] ^ (c >> 8) }
        }
        return c ^ 0xFFFF_FFFF
    }
}
