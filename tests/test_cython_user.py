"""A Cython user cimports fastlmrl's shipped .pxd and calls a kernel from their own nogil code."""

import os
import subprocess
import sys
import textwrap

import numpy as np

import fastlmrl

USER_PYX = textwrap.dedent(
    """
    # cython: language_level=3, boundscheck=False, wraparound=False
    from libc.stdint cimport int64_t
    from fastlmrl._cython.td_learning cimport q_learning_update_core
    from fastlmrl._cython.selection cimport greedy_core

    def train(double[:, ::1] q, const int64_t[::1] s, const int64_t[::1] a,
              const double[::1] r, const int64_t[::1] s2, const unsigned char[::1] done,
              double[::1] td, int64_t[::1] greedy_out, int epochs):
        cdef int e, status = 0
        with nogil:
            for e in range(epochs):
                status = status + q_learning_update_core(q, s, a, r, s2, done, 0.5, 0.9, td)
            status = status + greedy_core(q, s, greedy_out, 1)
        return status
    """
)

SETUP = textwrap.dedent(
    """
    from setuptools import setup, Extension
    from Cython.Build import cythonize
    import fastlmrl._cython, os
    inc = os.path.dirname(os.path.dirname(os.path.dirname(fastlmrl._cython.__file__)))
    setup(ext_modules=cythonize([Extension("user_kernels", ["user_kernels.pyx"])],
                                include_path=[inc], quiet=True))
    """
)


def test_cimport_shipped_pxd(tmp_path):
    import Cython  # noqa: F401  (the test extra installs it: a missing Cython must fail here)

    (tmp_path / "user_kernels.pyx").write_text(USER_PYX)
    (tmp_path / "setup.py").write_text(SETUP)
    build = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=dict(os.environ, CFLAGS="-O0"),
    )
    assert build.returncode == 0, build.stderr[-3000:]
    sys.path.insert(0, str(tmp_path))
    try:
        import user_kernels
    finally:
        sys.path.remove(str(tmp_path))
    rng = np.random.default_rng(0)
    q = rng.standard_normal((5, 3))
    s, a, s2 = rng.integers(0, 5, 20), rng.integers(0, 3, 20), rng.integers(0, 5, 20)
    r, t = rng.standard_normal(20), rng.random(20) < 0.2
    mine = q.copy()
    greedy = np.empty(20, np.int64)
    assert user_kernels.train(mine, s, a, r, s2, t.view(np.uint8), np.empty(20), greedy, 3) == 0
    expected = q.copy()
    for _ in range(3):
        fastlmrl.q_learning_update(expected, s, a, r, s2, t, 0.5, 0.9)
    np.testing.assert_array_equal(mine, expected)
    np.testing.assert_array_equal(greedy, fastlmrl.greedy(expected, s))
