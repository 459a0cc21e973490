# cython: language_level=3
# Memory-overlap check of the kernels' array arguments (status 8, fastlmrl._status.OVERLAPPING_ARRAYS):
# an array a kernel writes must not share memory with another argument, or a write could change an
# id after its range check.  Each argument is recorded as (first byte, byte count) in a small
# stack table, the written arrays first; O(number of pairs), no loop over the data.


cdef inline void span_2d(const void* first, Py_ssize_t rows, Py_ssize_t cols, size_t itemsize,
                         const char** start, size_t* size, int k) noexcept nogil:
    start[k] = <const char*>first
    size[k] = <size_t>(rows * cols) * itemsize if rows > 0 and cols > 0 else 0


cdef inline void span_1d(const void* first, Py_ssize_t n, size_t itemsize, const char** start,
                         size_t* size, int k) noexcept nogil:
    start[k] = <const char*>first
    size[k] = <size_t>n * itemsize if n > 0 else 0


cdef inline bint written_overlap(int n_written, int n_all, const char** start,
                                 const size_t* size) noexcept nogil:
    """Does one of the first n_written spans share a byte with any other of the n_all spans?"""
    cdef int i, j
    for i in range(n_written):
        if size[i] == 0:
            continue
        for j in range(i + 1, n_all):
            if size[j] > 0 and start[i] < start[j] + size[j] and start[j] < start[i] + size[i]:
                return True
    return False
