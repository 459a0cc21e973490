"""Build the Cython kernels; all metadata lives in pyproject.toml."""
import glob
import os
import platform
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

# Every fastlmrl/_cython/*.pyx is one extension (one topic).  For development,
# FASTLMRL_CYTHON_ONLY=a,b builds just those (e.g. with `python setup.py build_ext --inplace`).
CYTHON_MODULES = sorted(os.path.basename(p)[:-4] for p in glob.glob("fastlmrl/_cython/*.pyx"))
if os.environ.get("FASTLMRL_CYTHON_ONLY"):
    CYTHON_MODULES = [m for m in os.environ["FASTLMRL_CYTHON_ONLY"].split(",") if m]

if sys.platform == "win32":  # pragma: no cover - MSVC
    compile_args, link_args = ["/O2", "/openmp", "/fp:precise"], []
else:
    # -ffp-contract=off: no fused multiply-add, so every backend rounds exactly like the reference.
    # -fno-math-errno lets gcc inline sqrt & co. (results unchanged).  No -ffast-math: NaN/inf
    # semantics and summation order must stay those of the reference.
    compile_args = ["-O3", "-ffp-contract=off", "-fno-math-errno", "-fopenmp"]
    link_args = ["-fopenmp"]
    # Like Numba's JIT, build for the CPU that compiles (a source install runs where it builds).
    # Set FASTLMRL_PORTABLE=1 when building a wheel to copy to other machines.
    if not os.environ.get("FASTLMRL_PORTABLE") and platform.machine() in ("x86_64", "AMD64"):
        compile_args.append("-march=native")
    if os.environ.get("FASTLMRL_NO_OPENMP"):
        compile_args.remove("-fopenmp")
        link_args = []

extensions = [
    Extension(
        f"fastlmrl._cython.{name}",
        [f"fastlmrl/_cython/{name}.pyx"],
        include_dirs=[numpy.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    for name in CYTHON_MODULES
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3", "embedsignature": True},
        nthreads=int(os.environ.get("FASTLMRL_BUILD_JOBS", os.cpu_count() or 1)),
    ),
)
