import DynamicCore
import DynamicNN
import Foundation

/// A dataset file that cannot be used, naming the file and the problem.
public enum DatasetError: Error, Equatable, CustomStringConvertible {
    case missingFile(path: String)
    case unreadable(path: String, reason: String)
    /// Fewer bytes than the header or the record layout requires.
    case truncated(path: String, expectedBytes: Int, foundBytes: Int)
    /// An IDX file whose first bytes are not a known magic number.
    case wrongMagic(path: String, found: [UInt8])
    /// The file's size or dimensions do not fit the dataset's layout.
    case wrongSize(path: String, detail: String)
    case labelOutOfRange(path: String, record: Int, label: Int, classes: Int)
    /// A gzip'd file whose compressed data is damaged.
    case corruptGzip(path: String, reason: String)

    public var description: String {
        switch self {
        case .missingFile(let p): return "\(p): file not found"
        case .unreadable(let p, let r): return "\(p): cannot read (\(r))"
        case .truncated(let p, let e, let f): return "\(p): truncated, expected \(e) bytes, found \(f)"
        case .wrongMagic(let p, let f):
            return "\(p): not an IDX file of unsigned bytes (magic \(f.map { String(format: "%02x", $0) }.joined(separator: " ")))"
        case .wrongSize(let p, let d): return "\(p): wrong size: \(d)"
        case .labelOutOfRange(let p, let r, let l, let c): return "\(p): record \(r) has label \(l), outside 0..<\(c)"
        case .corruptGzip(let p, let r): return "\(p): corrupt gzip data: \(r)"
        }
    }
}

/// Labeled images kept as bytes, the form they have on disk (4× smaller than Float);
/// `MiniBatches` turns them into normalized Float batches.
public struct LabeledImages: Sendable {
    public let channels: Int, height: Int, width: Int
    public let classCount: Int
    /// [count, channels, height, width] pixel bytes, row-major (CHW per image).
    public private(set) var pixels: [UInt8]
    /// One class index in 0..<classCount per image.
    public private(set) var labels: [Int]

    public var count: Int { labels.count }
    public var imageSize: Int { channels * height * width }

    public init(channels: Int, height: Int, width: Int, classCount: Int, pixels: [UInt8], labels: [Int]) {
        precondition(channels > 0 && height > 0 && width > 0 && classCount > 0)
        precondition(pixels.count == labels.count * channels * height * width, "pixel count does not match \(labels.count) images")
        precondition(labels.allSatisfy { $0 >= 0 && $0 < classCount }, "label outside 0..<\(classCount)")
        (self.channels, self.height, self.width, self.classCount) = (channels, height, width, classCount)
        self.pixels = pixels
        self.labels = labels
    }

    /// The images at `indices`, in that order.
    public func subset(_ indices: [Int]) -> LabeledImages {
        let size = imageSize
        var px = [UInt8]()
        px.reserveCapacity(indices.count * size)
        for i in indices { px += pixels[(i * size)..<((i + 1) * size)] }
        return LabeledImages(channels: channels, height: height, width: width, classCount: classCount,
                             pixels: px, labels: indices.map { labels[$0] })
    }

    /// Holds out `validationCount` images drawn at random (seeded) as a validation set; the
    /// rest, in their original order, is the training set.
    public func split(validationCount: Int, seed: UInt64) -> (train: LabeledImages, validation: LabeledImages) {
        precondition(validationCount >= 0 && validationCount <= count, "validation split larger than the dataset")
        var rng = SeededRNG(seed: seed)
        let held = Array(MiniBatches.permutation(count, rng: &rng).prefix(validationCount)).sorted()
        var isHeld = [Bool](repeating: false, count: count)
        for i in held { isHeld[i] = true }
        return (subset((0..<count).filter { !isHeld[$0] }), subset(held))
    }

    /// Concatenates datasets of equal image geometry.
    public static func concatenate(_ parts: [LabeledImages]) -> LabeledImages {
        precondition(!parts.isEmpty)
        let f = parts[0]
        precondition(parts.allSatisfy { $0.channels == f.channels && $0.height == f.height && $0.width == f.width
                                        && $0.classCount == f.classCount }, "datasets differ in geometry")
        return LabeledImages(channels: f.channels, height: f.height, width: f.width, classCount: f.classCount,
                             pixels: parts.flatMap(\.pixels), labels: parts.flatMap(\.labels))
    }
}

/// Reads a whole file, distinguishing a missing file from other failures.
func readDatasetFile(_ url: URL) throws(DatasetError) -> [UInt8] {
    guard FileManager.default.fileExists(atPath: url.path) else { throw .missingFile(path: url.path) }
    do {
        return [UInt8](try Data(contentsOf: url))
    } catch {
        throw .unreadable(path: url.path, reason: error.localizedDescription)
    }
}

/// CIFAR-10 in its binary layout (`data_batch_1..5.bin`, `test_batch.bin`): records of one
/// label byte then 3072 pixel bytes (1024 R, 1024 G, 1024 B, each 32×32 row-major).
public enum CIFAR10 {
    public static let classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    public static let recordSize = 1 + 3 * 32 * 32
    public static let trainFiles = (1...5).map { "data_batch_\($0).bin" }
    public static let testFiles = ["test_batch.bin"]

    public enum Split: Sendable { case train, test }

    /// The 50,000 training or 10,000 test images from `directory` ([N, 3, 32, 32] bytes).
    public static func load(directory: URL, split: Split) throws(DatasetError) -> LabeledImages {
        var parts: [LabeledImages] = []
        for name in split == .train ? trainFiles : testFiles {
            parts.append(try read(file: directory.appendingPathComponent(name)))
        }
        return LabeledImages.concatenate(parts)
    }

    /// One batch file; any positive whole number of records is accepted.
    public static func read(file url: URL) throws(DatasetError) -> LabeledImages {
        let bytes = try readDatasetFile(url)
        guard !bytes.isEmpty else { throw .truncated(path: url.path, expectedBytes: recordSize, foundBytes: 0) }
        guard bytes.count % recordSize == 0 else {
            throw .wrongSize(path: url.path, detail: "\(bytes.count) bytes is not a whole number of \(recordSize)-byte records"
                             + " (truncated or not CIFAR-10 binary)")
        }
        let n = bytes.count / recordSize
        var pixels = [UInt8](repeating: 0, count: n * (recordSize - 1))
        var labels = [Int](repeating: 0, count: n)
        for r in 0..<n {
            let label = Int(bytes[r * recordSize])
            guard label < classes.count else {
                throw .labelOutOfRange(path: url.path, record: r, label: label, classes: classes.count)
            }
            labels[r] = label
            pixels.withUnsafeMutableBufferPointer { dst in
                bytes.withUnsafeBufferPointer { src in
                    (dst.baseAddress! + r * (recordSize - 1)).update(from: src.baseAddress! + r * recordSize + 1,
                                                                     count: recordSize - 1)
                }
            }
        }
        return LabeledImages(channels: 3, height: 32, width: 32, classCount: classes.count, pixels: pixels, labels: labels)
    }
}

/// IDX files of unsigned bytes (the MNIST / Fashion-MNIST format): magic 00 00 08 d, then d
/// big-endian UInt32 dimensions, then the bytes. Gzip'd files are decompressed transparently.
public enum IDX {
    /// The dimensions and the data bytes of an IDX file (raw or gzip'd).
    public static func read(file url: URL) throws(DatasetError) -> (dimensions: [Int], bytes: [UInt8]) {
        var bytes = try readDatasetFile(url)
        if Gzip.isGzip(bytes) {
            do { bytes = try Gzip.decompress(bytes) } catch { throw .corruptGzip(path: url.path, reason: error.reason) }
        }
        guard bytes.count >= 4 else { throw .truncated(path: url.path, expectedBytes: 4, foundBytes: bytes.count) }
        guard bytes[0] == 0, bytes[1] == 0, bytes[2] == 0x08, bytes[3] >= 1 else {
            throw .wrongMagic(path: url.path, found: Array(bytes.prefix(4)))
        }
        let rank = Int(bytes[3])
        let header = 4 + 4 * rank
        guard bytes.count >= header else { throw .truncated(path: url.path, expectedBytes: header, foundBytes: bytes.count) }
        let dims = (0..<rank).map { d in
            (0..<4).reduce(0) { $0 << 8 | Int(bytes[4 + 4 * d + $1]) }
        }
        let expected = header + dims.reduce(1, *)
        guard bytes.count >= expected else { throw .truncated(path: url.path, expectedBytes: expected, foundBytes: bytes.count) }
        guard bytes.count == expected else {
            throw .wrongSize(path: url.path, detail: "\(bytes.count - expected) bytes after the \(dims) data")
        }
        return (dims, Array(bytes[header...]))
    }
}

/// Fashion-MNIST (and MNIST) from the four IDX files in a directory, raw or gzip'd
/// (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`, `t10k-…`). Debian's
/// `dataset-fashion-mnist` installs them in /usr/share/datasets/fashion-mnist.
public enum FashionMNIST {
    public static let classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                                 "Bag", "Ankle boot"]

    public enum Split: Sendable { case train, test }

    /// [N, 1, 28, 28] bytes with labels 0..<10.
    public static func load(directory: URL, split: Split) throws(DatasetError) -> LabeledImages {
        let prefix = split == .train ? "train" : "t10k"
        let imagesURL = try locate(directory, "\(prefix)-images-idx3-ubyte")
        let labelsURL = try locate(directory, "\(prefix)-labels-idx1-ubyte")
        let images = try IDX.read(file: imagesURL), labels = try IDX.read(file: labelsURL)
        guard images.dimensions.count == 3 else {
            throw .wrongSize(path: imagesURL.path, detail: "images must have 3 dimensions, found \(images.dimensions)")
        }
        guard labels.dimensions.count == 1 else {
            throw .wrongSize(path: labelsURL.path, detail: "labels must have 1 dimension, found \(labels.dimensions)")
        }
        guard labels.dimensions[0] == images.dimensions[0] else {
            throw .wrongSize(path: labelsURL.path,
                             detail: "\(labels.dimensions[0]) labels for \(images.dimensions[0]) images in \(imagesURL.lastPathComponent)")
        }
        if let r = labels.bytes.firstIndex(where: { $0 >= classes.count }) {
            throw .labelOutOfRange(path: labelsURL.path, record: r, label: Int(labels.bytes[r]), classes: classes.count)
        }
        return LabeledImages(channels: 1, height: images.dimensions[1], width: images.dimensions[2],
                             classCount: classes.count, pixels: images.bytes, labels: labels.bytes.map(Int.init))
    }

    /// `name` if it exists, else `name.gz`.
    static func locate(_ directory: URL, _ name: String) throws(DatasetError) -> URL {
        for candidate in [name, name + ".gz"] {
            let url = directory.appendingPathComponent(candidate)
            if FileManager.default.fileExists(atPath: url.path) { return url }
        }
        throw .missingFile(path: directory.appendingPathComponent(name).path + "[.gz]")
    }
}
