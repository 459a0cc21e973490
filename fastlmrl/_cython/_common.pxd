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

    Written as a branch-free select (a NaN never compares greater, so it is skipped), which gcc
    turns into maxss/maxsd instead of an unpredictable branch.
    """
    cdef real_t m = -INFINITY, v
    cdef Py_ssize_t a
    for a in range(n):
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
