# cython: language_level=3
"""Fused types and inline building blocks shared by the Cython kernels (cimport-able)."""
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.math cimport INFINITY, isfinite

ctypedef fused real_t:
    float
    double

ctypedef fused index_t:
    int32_t
    int64_t

cdef enum:
    # The most threads a kernel's parallel loop starts, whatever num_threads asks for (results
    # do not depend on the thread count): libgomp crashed when a direct call asked for ~10**5
    # threads on a large batch.  (advantages and selection also clamp their def wrappers'
    # num_threads to the CPU count.)
    THREAD_LIMIT = 1024

# The counter-based RNG (fastlmrl.rng): SplitMix64 output `counter` of `key`.
cdef inline uint64_t mix64(uint64_t z) noexcept nogil:
    z = (z ^ (z >> 30)) * <uint64_t>0xBF58476D1CE4E5B9ULL
    z = (z ^ (z >> 27)) * <uint64_t>0x94D049BB133111EBULL
    return z ^ (z >> 31)

cdef inline double uniform(uint64_t key, uint64_t counter) noexcept nogil:
    # < 2**53 after the shift: converting through int64 is exact and cheaper than uint64 -> double
    return <double>(<int64_t>(mix64(key + (counter + 1) * <uint64_t>0x9E3779B97F4A7C15ULL) >> 11)) * (1.0 / 9007199254740992.0)

cdef inline double row_max(const real_t* row, Py_ssize_t n) noexcept nogil:
    """max of the non-NaN entries of row[0:n]; -inf when there are none.

    Branch-free selects (a NaN never compares greater, so it is skipped), which gcc turns into
    maxss/maxsd; long rows use 8 independent running maxima so the selects pipeline (and
    vectorise), then combine them.  The value is the same as one sequential pass (the max is
    order-independent; only the sign of a zero maximum may differ, as with LLVM's maxnum).
    """
    cdef real_t m = -INFINITY, v
    cdef real_t m0 = -INFINITY, m1 = -INFINITY, m2 = -INFINITY, m3 = -INFINITY
    cdef real_t m4 = -INFINITY, m5 = -INFINITY, m6 = -INFINITY, m7 = -INFINITY
    cdef Py_ssize_t a, end = n - n % 8
    if n >= 64:
        for a in range(0, end, 8):
            m0 = row[a] if row[a] > m0 else m0
            m1 = row[a + 1] if row[a + 1] > m1 else m1
            m2 = row[a + 2] if row[a + 2] > m2 else m2
            m3 = row[a + 3] if row[a + 3] > m3 else m3
            m4 = row[a + 4] if row[a + 4] > m4 else m4
            m5 = row[a + 5] if row[a + 5] > m5 else m5
            m6 = row[a + 6] if row[a + 6] > m6 else m6
            m7 = row[a + 7] if row[a + 7] > m7 else m7
        m0 = m1 if m1 > m0 else m0
        m2 = m3 if m3 > m2 else m2
        m4 = m5 if m5 > m4 else m4
        m6 = m7 if m7 > m6 else m6
        m0 = m2 if m2 > m0 else m0
        m4 = m6 if m6 > m4 else m4
        m = m4 if m4 > m0 else m0
    else:
        end = 0
    for a in range(end, n):
        v = row[a]
        m = v if v > m else m
    return <double>m

cdef inline Py_ssize_t row_argmax(const real_t* row, Py_ssize_t n) noexcept nogil:
    """Lowest index of the maximum of the non-NaN entries of row[0:n]; 0 when all are NaN.

    Short rows: one branch-free pass (strict > keeps the lowest index of a tie, skips NaN).
    Long rows: the max first, then the first index holding it (the max pass is cheaper per element).
    """
    cdef real_t m = -INFINITY, v
    cdef Py_ssize_t a, best = 0
    cdef bint greater
    if n < 256:
        for a in range(n):
            v = row[a]
            greater = v > m
            m = v if greater else m
            best = a if greater else best
        if m > -INFINITY:
            return best
        # nothing above -inf: the answer is the first -inf entry (0 if the row is all NaN)
    else:
        m = <real_t>row_max(row, n)
    for a in range(n):
        if row[a] == m:
            return a
    return 0

cdef inline bint out_of_range(const index_t[::1] ids, Py_ssize_t bound) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= bound:
            return True
    return False

cdef inline bint not_all_finite(const real_t[::1] values) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(values.shape[0]):
        if not isfinite(values[i]):
            return True
    return False
