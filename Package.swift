// swift-tools-version:6.0
import PackageDescription

// No package dependencies, by design: Foundation, Dispatch and XCTest only.
// Fast builds add `-Xswiftc -target-cpu -Xswiftc native` (x86-64: AVX2 + FMA, and AVX-512
// where the CPU has it; `haswell` for a portable AVX2 binary) on the command line; it is not
// set here because `unsafeFlags` would make the package unusable as a versioned dependency.
let package = Package(
    name: "DynamicInference",
    products: [
        .library(name: "DynamicInference", targets: ["DynamicInference"]),
        .library(name: "DynamicCore", targets: ["DynamicCore"]),
        .library(name: "DynamicNN", targets: ["DynamicNN"]),
        .library(name: "DynamicData", targets: ["DynamicData"]),
        .library(name: "Backbones", targets: ["Backbones"]),
        .library(name: "EarlyExit", targets: ["EarlyExit"]),
        .executable(name: "dynbench", targets: ["dynbench"]),
    ],
    targets: [
        // Header-only C shim: tells Swift at compile time whether the target has FMA.
        .target(name: "DynamicShims", path: "Sources/DynamicShims"),
        .target(name: "DynamicCore", dependencies: ["DynamicShims"]),
        .target(name: "DynamicNN", dependencies: ["DynamicCore"]),
        // Datasets, batching and augmentation: the sources the Trainer reads.
        .target(name: "DynamicData", dependencies: ["DynamicCore", "DynamicNN"]),
        // CIFAR ResNets, torchvision ResNet-18/50, SmallCNN — on the engine.
        .target(name: "Backbones", dependencies: ["DynamicNN"]),
        // Early-exit networks, exit policies, anytime and budgeted evaluation.
        .target(name: "EarlyExit", dependencies: ["DynamicNN", "Backbones"]),
        .target(name: "DynamicInference", dependencies: ["DynamicCore", "DynamicNN", "DynamicData", "Backbones", "EarlyExit"]),
        .executableTarget(name: "dynbench", dependencies: ["DynamicInference"], path: "Benchmarks/dynbench"),
        // assertClose and friends, shared by the test targets.
        .target(name: "TestSupport", dependencies: ["DynamicCore", "DynamicNN"], path: "Tests/TestSupport"),
        .testTarget(name: "DynamicCoreTests", dependencies: ["DynamicCore", "TestSupport"]),
        .testTarget(name: "DynamicDataTests", dependencies: ["DynamicData", "DynamicNN", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "BackbonesTests", dependencies: ["Backbones", "DynamicNN", "DynamicData", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(name: "EarlyExitTests", dependencies: ["EarlyExit", "Backbones", "DynamicNN", "TestSupport"],
                    resources: [.copy("Fixtures")]),
        .testTarget(
            name: "DynamicNNTests", dependencies: ["DynamicNN", "DynamicData", "Backbones", "TestSupport"],
            resources: [.copy("Fixtures")]),
    ],
    swiftLanguageModes: [.v6]
)
