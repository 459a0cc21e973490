# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Cython random permutation: the stable argsort of n counter-based uniforms in expected O(n)
(bucket counting sort, then insertion sort within buckets; see fastlmrl/_numba/permutations.py).
Statuses (fastlmrl.permutations.CONTRACT): BAD_SHAPES for scratch shorter than n / n + 1,
OVERLAPPING_ARRAYS when two of out, uniforms, starts share memory; nothing written.
"""

__all__ = ["random_permutation"]
from libc.stdint cimport int64_t, uint64_t

from fastlmrl._cython._common cimport uniform

from fastlmrl._cython.overlap cimport span_1d, written_overlap
# status codes: fastlmrl._status.Status (status.pxd is generated from it)
from fastlmrl._cython cimport status as st


cdef int random_permutation_core(uint64_t key, uint64_t counter, int64_t[::1] out,
                                 double[::1] uniforms, int64_t[::1] starts) noexcept nogil:
    cdef Py_ssize_t n = out.shape[0], i, b, k, j, lo, hi, p
    cdef double u
    cdef const char* start[3]
    cdef size_t size[3]
    if uniforms.shape[0] < n or starts.shape[0] < n + 1:
        return st.BAD_SHAPES
    span_1d(&out[0], out.shape[0], sizeof(int64_t), start, size, 0)
    span_1d(&uniforms[0], uniforms.shape[0], sizeof(double), start, size, 1)
    span_1d(&starts[0], starts.shape[0], sizeof(int64_t), start, size, 2)
    if written_overlap(3, 3, start, size):
        return st.OVERLAPPING_ARRAYS
    for b in range(n + 1):
        starts[b] = 0
    for i in range(n):  # bucket sizes
        b = <Py_ssize_t>(uniform(key, counter + <uint64_t>i) * n)
        if b > n - 1:
            b = n - 1
        starts[b + 1] += 1
    for b in range(n):
        starts[b + 1] += starts[b]
    for i in range(n):  # stable placement (u regenerated: cheaper than a random read)
        u = uniform(key, counter + <uint64_t>i)
        b = <Py_ssize_t>(u * n)
        if b > n - 1:
            b = n - 1
        p = starts[b]
        starts[b] = p + 1
        out[p] = i
        uniforms[p] = u
    lo = 0
    for b in range(n):  # bucket b is out[lo:starts[b]], its uniforms beside it
        hi = starts[b]
        for k in range(lo + 1, hi):
            i = out[k]
            u = uniforms[k]
            j = k
            while j > lo and uniforms[j - 1] > u:
                out[j] = out[j - 1]
                uniforms[j] = uniforms[j - 1]
                j -= 1
            out[j] = i
            uniforms[j] = u
        lo = hi
    return 0


def random_permutation(uint64_t key, uint64_t counter, int64_t[::1] out, double[::1] uniforms,
                       int64_t[::1] starts):
    cdef int status
    with nogil:
        status = random_permutation_core(key, counter, out, uniforms, starts)
    return status
