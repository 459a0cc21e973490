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

# Incremental rebuilds.  pip builds in the source tree (build/, and the .c files beside the .pyx),
# but in a fresh isolated environment each time, whose Cython/Includes/*.pxd are newer than our .c
# files: cythonize would regenerate, and gcc recompile, every extension (minutes) even for
# `pip install '.[plot]'` on an unchanged checkout.  So staleness is judged on our own files only:
# a .c is regenerated when its .pyx or a .pxd of ours it depends on is newer, or when the build
# stamp changes (Cython, NumPy or Python version, compiler flags); setuptools then recompiles only
# the extensions whose .c (or the stamp) is newer than the built module.
BUILD_STAMP = os.path.join("build", "fastlmrl-build-stamp.txt")
DIRECTIVES = {"language_level": "3", "embedsignature": True}
HEADERS = sorted(glob.glob("fastlmrl/_cython/*.h"))


def _update_build_stamp() -> None:
    import Cython

    text = (
        f"cython {Cython.__version__}\nnumpy {numpy.__version__}\npython {sys.version}\n"
        f"compile {compile_args}\nlink {link_args}\ndirectives {DIRECTIVES}\n"
    )
    try:
        with open(BUILD_STAMP) as handle:
            if handle.read() == text:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(BUILD_STAMP), exist_ok=True)
    with open(BUILD_STAMP, "w") as handle:
        handle.write(text)


def _own_dependencies(name: str) -> list:
    pyx = f"fastlmrl/_cython/{name}.pyx"
    own = sorted(glob.glob("fastlmrl/_cython/*.pxd"))
    try:
        from Cython.Build.Dependencies import create_dependency_tree

        found = create_dependency_tree().all_dependencies(pyx)
        own = sorted(p for p in found if os.path.abspath(p).startswith(os.path.abspath("fastlmrl")))
    except Exception:  # pragma: no cover - another Cython API: every .pxd of ours
        own = [pyx] + own
    return own + HEADERS


def _c_is_current(name: str, depends: list) -> bool:
    c_file = f"fastlmrl/_cython/{name}.c"
    if not os.path.exists(c_file):
        return False
    return os.path.getmtime(c_file) >= max(os.path.getmtime(p) for p in depends + [BUILD_STAMP])


_update_build_stamp()
to_cythonize, current = [], []
for name in CYTHON_MODULES:
    depends = _own_dependencies(name)
    fresh = _c_is_current(name, depends)
    (current if fresh else to_cythonize).append(
        Extension(
            f"fastlmrl._cython.{name}",
            [f"fastlmrl/_cython/{name}.c" if fresh else f"fastlmrl/_cython/{name}.pyx"],
            depends=[BUILD_STAMP] + HEADERS,
            include_dirs=[numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=compile_args,
            extra_link_args=link_args,
        )
    )

setup(
    ext_modules=current
    + (
        cythonize(
            to_cythonize,
            compiler_directives=DIRECTIVES,
            nthreads=int(os.environ.get("FASTLMRL_BUILD_JOBS", os.cpu_count() or 1)),
            force=True,  # judged stale above
        )
        if to_cythonize
        else []
    ),
)
