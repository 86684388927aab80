import DynamicCore
import Foundation
@testable import DynamicData
import DynamicNN
import XCTest

/// Directory of this target's fixtures (made by scripts/make_grad_fixtures.py).
private let fixturesURL: URL = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!

/// Dataset readers on small synthetic files (and malformed variants), gzip, normalization,
/// augmentation, batching and splits.
final class DataTests: XCTestCase {
    var dir: URL!

    override func setUpWithError() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("DataTests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(at: dir)
    }

    func write(_ bytes: [UInt8], _ name: String) throws -> URL {
        let url = dir.appendingPathComponent(name)
        try Data(bytes).write(to: url)
        return url
    }

    /// Record r of file f: label (f + r) % 10, pixel i = (f·31 + r·7 + i) % 256.
    func cifarFile(_ f: Int, records: Int) -> [UInt8] {
        var out: [UInt8] = []
        for r in 0..<records {
            out.append(UInt8((f + r) % 10))
            for i in 0..<3072 { out.append(UInt8((f * 31 + r * 7 + i) % 256)) }
        }
        return out
    }

    func testCIFAR10ReadsRecordsInCHWOrder() throws {
        for f in 1...5 { _ = try write(cifarFile(f, records: 2), "data_batch_\(f).bin") }
        _ = try write(cifarFile(9, records: 3), "test_batch.bin")
        let train = try CIFAR10.load(directory: dir, split: .train)
        XCTAssertEqual(train.count, 10)
        XCTAssertEqual([train.channels, train.height, train.width], [3, 32, 32])
        XCTAssertEqual(train.labels, [1, 2, 2, 3, 3, 4, 4, 5, 5, 6])
        // Image 3 = file 2, record 1: pixel (c, y, x) is byte c·1024 + y·32 + x of its record.
        let img3 = Array(train.pixels[(3 * 3072)..<(4 * 3072)])
        let offset = 1024 + 5 * 32 + 7
        XCTAssertEqual(img3[offset], UInt8((2 * 31 + 7 + offset) % 256))
        let test = try CIFAR10.load(directory: dir, split: .test)
        XCTAssertEqual(test.labels, [9, 0, 1])
    }

    func testCIFAR10MalformedFilesGiveTypedErrors() throws {
        let missing = dir.appendingPathComponent("test_batch.bin")
        XCTAssertThrowsError(try CIFAR10.load(directory: dir, split: .test)) {
            XCTAssertEqual($0 as? DatasetError, .missingFile(path: missing.path))
        }
        var bytes = cifarFile(0, records: 2)
        let truncated = try write(Array(bytes.dropLast(100)), "truncated.bin")
        XCTAssertThrowsError(try CIFAR10.read(file: truncated)) { error in
            guard case .wrongSize(let path, _) = error as? DatasetError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, truncated.path)
            XCTAssertTrue("\(error)".contains("truncated.bin"))
        }
        XCTAssertThrowsError(try CIFAR10.read(file: try write([], "empty.bin"))) {
            XCTAssertEqual($0 as? DatasetError, .truncated(path: self.dir.appendingPathComponent("empty.bin").path,
                                                          expectedBytes: 3073, foundBytes: 0))
        }
        bytes[3073] = 12
        let badLabel = try write(bytes, "label.bin")
        XCTAssertThrowsError(try CIFAR10.read(file: badLabel)) {
            XCTAssertEqual($0 as? DatasetError, .labelOutOfRange(path: badLabel.path, record: 1, label: 12, classes: 10))
        }
    }

    func idx(_ dims: [Int], _ data: [UInt8]) -> [UInt8] {
        [0, 0, 8, UInt8(dims.count)] + dims.flatMap { d in (0..<4).map { UInt8((d >> (24 - 8 * $0)) & 0xFF) } } + data
    }

    func testFashionMNISTFromRawIDXFiles() throws {
        let pixels = (0..<(3 * 28 * 28)).map { UInt8($0 % 256) }
        _ = try write(idx([3, 28, 28], pixels), "t10k-images-idx3-ubyte")
        _ = try write(idx([3], [7, 0, 9]), "t10k-labels-idx1-ubyte")
        let test = try FashionMNIST.load(directory: dir, split: .test)
        XCTAssertEqual(test.labels, [7, 0, 9])
        XCTAssertEqual([test.channels, test.height, test.width], [1, 28, 28])
        XCTAssertEqual(test.pixels, pixels)
    }

    func testIDXMalformedFilesGiveTypedErrors() throws {
        let magic = try write([0, 0, 9, 1, 0, 0, 0, 1, 5], "magic")
        XCTAssertThrowsError(try IDX.read(file: magic)) {
            XCTAssertEqual($0 as? DatasetError, .wrongMagic(path: magic.path, found: [0, 0, 9, 1]))
        }
        let header = try write([0, 0, 8, 3, 0, 0, 0, 2], "header")
        XCTAssertThrowsError(try IDX.read(file: header)) {
            XCTAssertEqual($0 as? DatasetError, .truncated(path: header.path, expectedBytes: 16, foundBytes: 8))
        }
        let short = try write(idx([4, 2], [1, 2, 3]), "short")
        XCTAssertThrowsError(try IDX.read(file: short)) {
            XCTAssertEqual($0 as? DatasetError, .truncated(path: short.path, expectedBytes: 20, foundBytes: 15))
        }
        let long = try write(idx([2], [1, 2, 3]), "long")
        XCTAssertThrowsError(try IDX.read(file: long)) { error in
            guard case .wrongSize(long.path, _) = error as? DatasetError else { return XCTFail("\(error)") }
        }
        // Label count that does not match the images, and a label outside 0..<10.
        _ = try write(idx([2, 28, 28], [UInt8](repeating: 0, count: 2 * 784)), "train-images-idx3-ubyte")
        let labels = try write(idx([3], [1, 2, 3]), "train-labels-idx1-ubyte")
        XCTAssertThrowsError(try FashionMNIST.load(directory: dir, split: .train)) { error in
            guard case .wrongSize(labels.path, _) = error as? DatasetError else { return XCTFail("\(error)") }
        }
        _ = try write(idx([2], [1, 10]), "train-labels-idx1-ubyte")
        XCTAssertThrowsError(try FashionMNIST.load(directory: dir, split: .train)) {
            XCTAssertEqual($0 as? DatasetError, .labelOutOfRange(path: labels.path, record: 1, label: 10, classes: 10))
        }
        XCTAssertThrowsError(try FashionMNIST.load(directory: dir, split: .test)) {
            XCTAssertEqual($0 as? DatasetError,
                           .missingFile(path: self.dir.appendingPathComponent("t10k-images-idx3-ubyte").path + "[.gz]"))
        }
    }

    /// Fixtures made by Python's zlib: stored, fixed-Huffman and dynamic-Huffman deflate blocks.
    func testGzipIDXFilesFromPython() throws {
        let data = fixturesURL.appendingPathComponent("data")
        let train = try FashionMNIST.load(directory: data, split: .train)
        XCTAssertEqual(train.count, 30)
        XCTAssertEqual(train.labels, (0..<30).map { $0 * 3 % 10 })
        var expected: [UInt8] = []
        for i in 0..<30 { for r in 0..<28 { for c in 0..<28 { expected.append(UInt8((i * 7 + r * r + 3 * c) % 256)) } } }
        XCTAssertEqual(train.pixels, expected)
        let stored = try IDX.read(file: data.appendingPathComponent("stored-labels-idx1-ubyte.gz"))
        XCTAssertEqual(stored.dimensions, [40])
        XCTAssertEqual(stored.bytes, (0..<40).map { UInt8($0 * 3 % 10) })
    }

    func testCorruptAndTruncatedGzipGiveTypedErrors() throws {
        let blob = [UInt8](try Data(contentsOf: fixturesURL.appendingPathComponent("data/train-images-idx3-ubyte.gz")))
        var flipped = blob
        flipped[blob.count / 2] ^= 0x55
        let corrupt = try write(flipped, "corrupt.gz")
        XCTAssertThrowsError(try IDX.read(file: corrupt)) { error in
            guard case .corruptGzip(corrupt.path, _) = error as? DatasetError else { return XCTFail("\(error)") }
        }
        let cut = try write(Array(blob.prefix(blob.count - 30)), "cut.gz")
        XCTAssertThrowsError(try IDX.read(file: cut)) { error in
            guard case .corruptGzip(cut.path, _) = error as? DatasetError else { return XCTFail("\(error)") }
        }
    }

    func makeImages(count: Int, channels: Int = 3, size: Int = 6) -> LabeledImages {
        var rng = SeededRNG(seed: 12)
        let px = (0..<(count * channels * size * size)).map { _ in UInt8(rng.next() % 256) }
        return LabeledImages(channels: channels, height: size, width: size, classCount: 10,
                             pixels: px, labels: (0..<count).map { $0 % 10 })
    }

    func testNormalizationAndDeterministicBatches() {
        let data = makeImages(count: 10)
        let norm = Normalization(mean: [0.5, 0.25, 0], std: [0.5, 0.25, 1])
        let plain = MiniBatches(data, batchSize: 4, normalization: norm)
        XCTAssertEqual(plain.batchCount, 3)
        XCTAssertEqual(MiniBatches(data, batchSize: 4, normalization: norm, dropLast: true).batchCount, 2)
        let first = plain.epoch(0)[0]
        XCTAssertEqual(first.images.shape, [4, 3, 6, 6])
        XCTAssertEqual(first.labels, [0, 1, 2, 3])
        XCTAssertEqual(first.images[1, 1, 2, 3], (Float(data.pixels[108 + 36 + 15]) / 255 - 0.25) / 0.25, accuracy: 1e-6)
        XCTAssertEqual(plain.epoch(0)[2].labels, [8, 9])

        let shuffled = MiniBatches(data, batchSize: 4, normalization: norm, augmentation: .cifar, shuffle: true, seed: 5)
        let again = MiniBatches(data, batchSize: 4, normalization: norm, augmentation: .cifar, shuffle: true, seed: 5)
        XCTAssertEqual(shuffled.epoch(1)[1].images.scalars, again.epoch(1)[1].images.scalars)
        XCTAssertEqual(shuffled.epoch(1).order, again.epoch(1).order)
        XCTAssertNotEqual(shuffled.epoch(0).order, shuffled.epoch(1).order)
        XCTAssertEqual(shuffled.epoch(0).order.sorted(), Array(0..<10))
        XCTAssertNotEqual(shuffled.epoch(0).order,
                          MiniBatches(data, batchSize: 4, normalization: norm, shuffle: true, seed: 6).epoch(0).order)
    }

    /// Every augmented image must be the source shifted by (dy, dx) ∈ [−4, 4]² with black
    /// padding, possibly mirrored — and the draws must cover shifts and both flips.
    func testRandomCropAndFlip() {
        let data = makeImages(count: 40, channels: 1, size: 8)
        let norm = Normalization(mean: [0], std: [1])
        let batches = MiniBatches(data, batchSize: 40, normalization: norm, augmentation: .cifar, seed: 3)
        let out = batches.epoch(0)[0].images
        var seen = Set<String>()
        for i in 0..<40 {
            let src = Array(data.pixels[(i * 64)..<((i + 1) * 64)]).map { Float($0) / 255 }
            let img = Array(out.scalars[(i * 64)..<((i + 1) * 64)])
            var match: String?
            for dy in -4...4 { for dx in -4...4 { for flip in [false, true] {
                let candidate = (0..<64).map { k -> Float in
                    let (y, x) = (k / 8, k % 8)
                    let sy = y + dy, sx = (flip ? 7 - x : x) + dx
                    return sy >= 0 && sy < 8 && sx >= 0 && sx < 8 ? src[sy * 8 + sx] : 0
                }
                if candidate == img && match == nil { match = "\(dy),\(dx),\(flip)" }
            } } }
            XCTAssertNotNil(match, "image \(i) is not a padded crop / flip of its source")
            if let m = match { seen.insert(m) }
        }
        XCTAssertGreaterThan(seen.count, 20, "augmentation draws too few distinct transforms")
        XCTAssertTrue(seen.contains { $0.hasSuffix("true") } && seen.contains { $0.hasSuffix("false") })
    }

    /// A crop smaller than the image (progressive resizing): every 5×5 output is the window at
    /// (dy, dx) ∈ [−2, 5]² of the source padded by 2, possibly mirrored, and the offsets reach both ends.
    func testSmallerRandomCrop() {
        let data = makeImages(count: 60, channels: 1, size: 8)
        let batches = MiniBatches(data, batchSize: 60, normalization: Normalization(mean: [0], std: [1]),
                                  augmentation: Augmentation(cropPadding: 2, horizontalFlip: true, cropSize: 5), seed: 4)
        XCTAssertEqual(batches.outputSize.height, 5)
        let out = batches.epoch(0)[0].images
        XCTAssertEqual(out.shape, [60, 1, 5, 5])
        var offsets = Set<Int>()
        for i in 0..<60 {
            let src = Array(data.pixels[(i * 64)..<((i + 1) * 64)]).map { Float($0) / 255 }
            let img = Array(out.scalars[(i * 25)..<((i + 1) * 25)])
            var match: (Int, Int)?
            for dy in -2...5 { for dx in -2...5 { for flip in [false, true] where match == nil {
                let candidate = (0..<25).map { k -> Float in
                    let (y, x) = (k / 5, k % 5)
                    let sy = y + dy, sx = (flip ? 4 - x : x) + dx
                    return sy >= 0 && sy < 8 && sx >= 0 && sx < 8 ? src[sy * 8 + sx] : 0
                }
                if candidate == img { match = (dy, dx) }
            } } }
            XCTAssertNotNil(match, "image \(i) is not a 5×5 window of its padded source")
            if let (dy, dx) = match { offsets.insert(dy); offsets.insert(dx) }
        }
        XCTAssertTrue(offsets.contains(-2) && offsets.contains(5), "offsets \(offsets.sorted()) miss an end of −2…5")
    }

    /// Alternating flips: epoch 1 mirrors exactly the images epoch 0 did not, epoch 2 repeats
    /// epoch 0, both ways occur, and the crops are the random-flip mode's (only flips differ).
    func testAlternatingFlip() {
        let data = makeImages(count: 40, channels: 1, size: 8)
        let norm = Normalization(mean: [0], std: [1])
        func images(_ aug: Augmentation, epoch: Int) -> [[Float]] {
            let out = MiniBatches(data, batchSize: 40, normalization: norm, augmentation: aug, seed: 7).epoch(epoch)[0].images
            return (0..<40).map { Array(out.scalars[($0 * 64)..<(($0 + 1) * 64)]) }
        }
        func mirrored(_ img: [Float]) -> [Float] { (0..<64).map { img[($0 / 8) * 8 + 7 - $0 % 8] } }
        let source = images(.none, epoch: 0)
        let plain = Augmentation(horizontalFlip: true, alternatingFlip: true)
        let (e0, e1, e2) = (images(plain, epoch: 0), images(plain, epoch: 1), images(plain, epoch: 2))
        var flippedFirst = 0
        for i in 0..<40 {
            let first = e0[i] == mirrored(source[i])
            XCTAssertTrue(first || e0[i] == source[i], "image \(i) is neither its source nor its mirror")
            XCTAssertEqual(e1[i], first ? source[i] : mirrored(source[i]), "image \(i) must flip the other way in epoch 1")
            XCTAssertEqual(e2[i], e0[i], "image \(i) must repeat epoch 0's flip in epoch 2")
            if first { flippedFirst += 1 }
        }
        XCTAssertTrue((8...32).contains(flippedFirst), "\(flippedFirst) of 40 images flipped in epoch 0")
        var padded = Augmentation.cifar
        let random = images(padded, epoch: 3)
        padded.alternatingFlip = true
        for (i, img) in images(padded, epoch: 3).enumerated() {
            XCTAssertTrue(img == random[i] || img == mirrored(random[i]), "image \(i): alternating flips changed the crop")
        }
    }

    /// Cutout zeroes one square per image (clipped at the borders) in every channel and leaves
    /// the rest as the crop and flip made it; without it, the batches are those of before.
    func testCutout() {
        var rng = SeededRNG(seed: 3)
        let data = LabeledImages(channels: 2, height: 8, width: 8, classCount: 10,
                                 pixels: (0..<(40 * 128)).map { _ in UInt8(1 + rng.next() % 255) }, labels: (0..<40).map { $0 % 10 })
        let norm = Normalization(mean: [0, 0], std: [1, 1])     // pixels stay > 0: every exact 0 is cutout's
        func images(_ aug: Augmentation) -> [[Float]] {
            let out = MiniBatches(data, batchSize: 40, normalization: norm, augmentation: aug, seed: 5).epoch(1)[0].images
            return (0..<40).map { Array(out.scalars[($0 * 128)..<(($0 + 1) * 128)]) }
        }
        let source = images(.none)
        var aug = Augmentation(horizontalFlip: true)
        let flipped = images(aug)
        aug.cutout = 4
        let cut = images(aug)
        var clipped = 0, whole = 0
        for i in 0..<40 {
            let zeros = (0..<64).filter { cut[i][$0] == 0 }
            XCTAssertEqual(zeros, (0..<64).filter { cut[i][64 + $0] == 0 }, "image \(i): channels differ")
            let ys = Set(zeros.map { $0 / 8 }), xs = Set(zeros.map { $0 % 8 })
            XCTAssertTrue((2...4).contains(ys.count) && (2...4).contains(xs.count), "image \(i): \(ys.count)×\(xs.count) square")
            XCTAssertEqual(zeros.count, ys.count * xs.count, "image \(i): not a rectangle")
            XCTAssertEqual(ys.max()! - ys.min()! + 1, ys.count)
            XCTAssertEqual(xs.max()! - xs.min()! + 1, xs.count)
            if zeros.count == 16 { whole += 1 } else { clipped += 1 }
            for k in 0..<128 where !zeros.contains(k % 64) {
                // Outside the square: the flipped (or plain) source, as without cutout.
                XCTAssertTrue(cut[i][k] == source[i][k] || cut[i][k] == source[i][(k / 8) * 8 + 7 - k % 8], "image \(i) pixel \(k)")
            }
        }
        XCTAssertTrue(whole > 0 && clipped > 0, "squares: \(whole) whole, \(clipped) clipped")
        aug.cutout = 0
        XCTAssertEqual(images(aug), flipped, "cutout 0 must not change the draws")
    }

    func testValidationSplitIsDisjointAndSeeded() {
        let data = makeImages(count: 50, channels: 1, size: 2)
        let (train, val) = data.split(validationCount: 12, seed: 9)
        XCTAssertEqual(train.count, 38)
        XCTAssertEqual(val.count, 12)
        let key = { (d: LabeledImages, i: Int) in Array(d.pixels[(i * 4)..<((i + 1) * 4)]) + [UInt8(d.labels[i])] }
        let all = Set((0..<50).map { key(data, $0) })
        let parts = (0..<38).map { key(train, $0) } + (0..<12).map { key(val, $0) }
        XCTAssertEqual(Set(parts), all)
        XCTAssertEqual(data.split(validationCount: 12, seed: 9).validation.pixels, val.pixels)
        XCTAssertNotEqual(data.split(validationCount: 12, seed: 10).validation.pixels, val.pixels)
    }

    func testMeasuredNormalization() {
        let data = LabeledImages(channels: 2, height: 1, width: 2, classCount: 2, pixels: [0, 255, 51, 51, 255, 0, 51, 51],
                                 labels: [0, 1])
        let n = Normalization.measured(on: data)
        XCTAssertEqual(n.mean[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(n.std[0], 0.5, accuracy: 1e-6)
        XCTAssertEqual(n.mean[1], 0.2, accuracy: 1e-6)
    }

    /// The real Fashion-MNIST files from Debian's package (`dataset-fashion-mnist`) whenever it is
    /// installed (0.6 s in the release build CI uses). Skipped, on purpose, on machines without
    /// the package: the synthetic IDX and gzip tests above cover the reader everywhere.
    func testRealFashionMNISTWhenInstalled() throws {
        let dir = URL(fileURLWithPath: "/usr/share/datasets/fashion-mnist")
        guard FileManager.default.fileExists(atPath: dir.path) else {
            throw XCTSkip("dataset-fashion-mnist is not installed")
        }
        let test = try FashionMNIST.load(directory: dir, split: .test)
        XCTAssertEqual(test.count, 10_000)
        XCTAssertEqual((0..<10).map { c in test.labels.filter { $0 == c }.count }, [Int](repeating: 1000, count: 10))
        let train = try FashionMNIST.load(directory: dir, split: .train)
        XCTAssertEqual(train.count, 60_000)
        let n = Normalization.measured(on: train)
        XCTAssertEqual(n.mean[0], Normalization.fashionMNIST.mean[0], accuracy: 1e-3)
        XCTAssertEqual(n.std[0], Normalization.fashionMNIST.std[0], accuracy: 1e-3)
    }
}
