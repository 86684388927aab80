/// Plain, obviously-correct implementations of every operation: the test oracle for the
/// optimized kernels in `Ops` and `Gemm`. Each lives in the same file as its fast twin and
/// has the same signature. They accumulate in Double where a sum is long.
public enum Reference {}

/// The optimized forward operations. Public API speaks NCHW.
public enum Ops {}
