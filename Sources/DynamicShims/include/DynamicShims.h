#ifndef DYNAMIC_SHIMS_H
#define DYNAMIC_SHIMS_H
#if defined(__linux__)
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <pthread.h>
#include <sched.h>
#endif
// Compile-time facts about the target that Swift cannot test with `#if`, and the few atomic
// operations the thread pool needs (header-only, so the package stays free of dependencies).

// With `-Xswiftc -target-cpu -Xswiftc native` (or haswell) the Clang importer defines __FMA__ and
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
// With `-target-cpu native` on an AVX-512 machine (or znver4, skylake-avx512, ...): SIMD16<Float>
// is one zmm register and there are 32 of them, so the 16-lane kernels double the FMA width.
#if defined(__AVX512F__)
static inline int dyn_target_has_avx512f(void) { return 1; }
#else
static inline int dyn_target_has_avx512f(void) { return 0; }
#endif

static inline long dyn_atomic_load(const long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void dyn_atomic_store(long *p, long v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline long dyn_atomic_fetch_add(long *p, long v) { return __atomic_fetch_add(p, v, __ATOMIC_ACQ_REL); }
static inline int dyn_atomic_cas(long *p, long expected, long desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}
/// Hint that `p` will be read soon (into all cache levels).
static inline void dyn_prefetch(const void *p) { __builtin_prefetch(p, 0, 3); }

/// The id of the `index`-th CPU this process may run on (Linux), or -1.
static inline int dyn_allowed_cpu(int index) {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return -1;
    int seen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &set)) {
            if (seen == index) return cpu;
            seen++;
        }
    }
#else
    (void)index;
#endif
    return -1;
}

/// Pins the calling thread to one CPU (Linux); returns 0 on success, -1 where unsupported.
static inline int dyn_pin_current_thread(int cpu) {
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
#else
    (void)cpu;
    return -1;
#endif
}

static inline void dyn_cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __asm__ __volatile__("pause");
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}
#endif
