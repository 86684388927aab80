#ifndef DYNAMIC_SHIMS_H
#define DYNAMIC_SHIMS_H
// Compile-time facts about the target that Swift cannot test with `#if`.
// With `-Xswiftc -target-cpu -Xswiftc haswell` the Clang importer defines __FMA__ and
// `SIMD.addingProduct` lowers to vfmadd; without it, it becomes a per-lane libm fma call
// (about 200x slower), so kernels must use `a + b * c` instead.
#if defined(__FMA__) || defined(__aarch64__) || defined(__ARM_FEATURE_FMA)
static inline int dyn_target_has_fma(void) { return 1; }
#else
static inline int dyn_target_has_fma(void) { return 0; }
#endif
#if defined(__AVX2__)
static inline int dyn_target_has_avx2(void) { return 1; }
#else
static inline int dyn_target_has_avx2(void) { return 0; }
#endif
#endif
