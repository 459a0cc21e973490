"""Building blocks shared by the Numba kernels: the RNG, a vectorisable row max, range checks;
and where Numba caches fastlmrl's compiled kernels.

Numba cache (``cache=True``): by default Numba writes its cache next to the source file
(``fastlmrl/_numba/__pycache__``), i.e. into site-packages, where ``pip uninstall`` leaves it
behind (and a leftover ``fastlmrl/_numba`` folder then shadows a later editable install).  This
module registers :class:`FastlmrlCacheLocator` ahead of Numba's own locators; it handles only the
files of this package (users' ``@njit(cache=True)`` code keeps Numba's usual location) and puts
the cache in :func:`numba_cache_dir`:

* ``$FASTLMRL_CACHE_DIR/numba``, else ``$NUMBA_CACHE_DIR/fastlmrl`` when the user set Numba's
  cache directory, else ``$XDG_CACHE_HOME/fastlmrl/numba`` (default ``~/.cache/fastlmrl/numba``);
* below it one folder per fastlmrl version, Python and Numba version, and one per install path.

Freshness: a cached kernel is used only while its file *and every fastlmrl file that file
imports* (transitively: ``_common.py``, ``fast_math.py``, ``rng.py``, ...) are unchanged (a
SHA-256 over their contents), so an edit of a shared helper invalidates the kernels that call it
(Numba's own stamp covers only the file defining the function).  The first compilation in a process
prints one line to stderr.
"""

import hashlib
import os
import re
import sys

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: Numba's own save
    fcntl = None

import numba
import numpy as np
from llvmlite import ir
from numba import njit
from numba.core import caching, cgutils, types
from numba.core import event as _event
from numba.extending import intrinsic, overload

from ..rng import GOLDEN, INV_2_53, MIX1, MIX2

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BACKEND_DIR = os.path.dirname(os.path.abspath(__file__))


def numba_cache_dir() -> str:
    """The folder under which fastlmrl's Numba kernels are cached (see the module docstring)."""
    from .. import __version__

    own = os.environ.get("FASTLMRL_CACHE_DIR", "").strip()
    if own:
        base = os.path.join(own, "numba")
    elif numba.config.CACHE_DIR:
        base = os.path.join(numba.config.CACHE_DIR, "fastlmrl")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
        root = xdg if os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        base = os.path.join(root, "fastlmrl", "numba")
    tag = f"{__version__}-py{sys.version_info[0]}{sys.version_info[1]}-numba{numba.__version__}"
    return os.path.join(base, tag)


_IMPORT = re.compile(r"^[ \t]*from[ \t]+(\.+)(\w*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)", re.M)


def _imported_files(path: str) -> list:
    """The fastlmrl source files that ``path`` imports with relative imports (``from .x import``,
    ``from ..x import``, ``from . import x``)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    here = os.path.dirname(path)
    out = []
    for dots, module, names in _IMPORT.findall(text):
        base = here if len(dots) == 1 else os.path.dirname(here)
        candidates = (
            [os.path.join(base, module + ".py")]
            if module
            else [
                os.path.join(base, n.strip() + ".py")
                for n in names.strip("()").split(",")
                if n.strip().isidentifier()
            ]
        )
        out.extend(c for c in candidates if os.path.isfile(c))
    return out


_STAMP = {}


def _dependency_stamp(py_file: str) -> str:
    """SHA-256 over ``py_file`` and every fastlmrl file it imports, transitively (recomputed when
    one of them changes size or modification time)."""
    seen, todo = [], [os.path.abspath(py_file)]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.append(path)
        todo.extend(_imported_files(path))
    files = sorted(seen)
    key = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for p in files)
    if key not in _STAMP:
        digest = hashlib.sha256()
        for path in files:
            digest.update(os.path.relpath(path, _PACKAGE_DIR).encode() + b"\0")
            with open(path, "rb") as f:
                digest.update(f.read())
        _STAMP[key] = digest.hexdigest()
    return _STAMP[key]


_Mixin = caching._SourceFileBackedLocatorMixin
_Base = caching._CacheLocator
_Impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl


class FastlmrlCacheLocator(_Mixin, _Base):
    """Numba cache locator for fastlmrl's own kernels: a user cache folder, never the package
    folder (module docstring)."""

    def __init__(self, py_func, py_file):
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(numba_cache_dir(), self.get_suitable_cache_subpath(py_file))

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return (super().get_source_stamp(), _dependency_stamp(self._py_file))

    @classmethod
    def from_function(cls, py_func, py_file):
        path = os.path.abspath(py_file)
        if os.path.dirname(path) != _BACKEND_DIR:
            return None  # not ours: Numba's next locator decides
        return super().from_function(py_func, py_file)


if FastlmrlCacheLocator not in _Impl._locator_classes:
    _Impl._locator_classes.insert(0, FastlmrlCacheLocator)


def _locked_save(self, key, data):
    """``IndexDataCacheFile.save`` under an exclusive lock of the index for fastlmrl's files.

    Numba's save reads the index, picks the first data-file number the index does not use, then
    writes index and data: two processes compiling the same kernel for different types at once
    (two fuzz workers, Ray trials, ``pytest -n``) can both pick ``.1.nbc``, and the index of one
    then names the machine code of the other -- a later call fails with "Known signatures ..." or
    runs code compiled for other types.  Holding ``<index>.lock`` (``fcntl.flock``) across the
    read-modify-write makes each save see the other's entries.
    """
    if not os.path.abspath(self._cache_path).startswith(_cache_root()):
        return _numba_save(self, key, data)
    os.makedirs(self._cache_path, exist_ok=True)
    with open(self._index_path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            return _numba_save(self, key, data)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _cache_root() -> str:
    return os.path.abspath(numba_cache_dir())


_numba_save = caching.IndexDataCacheFile.save
if fcntl is not None and getattr(_numba_save, "__name__", "") != "_locked_save":
    caching.IndexDataCacheFile.save = _locked_save


class _CompileNotice(_event.Listener):
    """Prints one line to stderr when the first fastlmrl kernel of the process is compiled
    (a cache miss: first use after an install or an edit)."""

    announced = False

    def on_start(self, event):
        if _CompileNotice.announced:
            return
        dispatcher = (event.data or {}).get("dispatcher")
        module = getattr(getattr(dispatcher, "py_func", None), "__module__", "") or ""
        if module.startswith("fastlmrl."):
            _CompileNotice.announced = True
            print(
                f"fastlmrl: compiling Numba kernels for this machine (once; cached in "
                f"{numba_cache_dir()}) ...",
                file=sys.stderr,
                flush=True,
            )

    def on_end(self, event):
        pass


_event.register("numba:compile", _CompileNotice())

_G = np.uint64(GOLDEN)
_M1 = np.uint64(MIX1)
_M2 = np.uint64(MIX2)
_ONE = np.uint64(1)
_S11 = np.uint64(11)
_S27 = np.uint64(27)
_S30 = np.uint64(30)
_S31 = np.uint64(31)

NJIT = dict(cache=True, nogil=True)


@intrinsic
def maxnum(typingctx, a, b):
    """LLVM's ``maxnum``: the larger of a and b, ignoring a NaN operand. Unlike ``max`` it
    vectorises."""
    if not (isinstance(a, types.Float) and a == b):
        return None
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        ty = args[0].type
        suffix = "f32" if ty == ir.FloatType() else "f64"
        fnty = ir.FunctionType(ty, [ty, ty])
        fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.maxnum.{suffix}")
        return builder.call(fn, args)

    return sig, codegen


@njit(**NJIT)
def mix64(z):
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


@njit(**NJIT)
def uniform(key, counter):
    """Double in [0, 1): SplitMix64 output ``counter`` of ``key`` (both uint64), top 53 bits."""
    # < 2**53 after the shift: converting through int64 is exact and avoids the slow uint64->double
    return np.float64(np.int64(mix64(key + (counter + _ONE) * _G) >> _S11)) * INV_2_53


def neg_inf(arr):
    """-inf in the dtype of ``arr`` (so float32 loops stay float32)."""
    return arr.dtype.type(-np.inf)


@overload(neg_inf)
def _neg_inf_overload(arr):
    if arr.dtype == types.float32:
        return lambda arr: np.float32(-np.inf)
    return lambda arr: -np.inf


# Below this many actions a single branch-free pass (compare + select) is fastest; above it, a
# vectorised maxnum pass followed by a search for the first maximum wins (measured: V=16 ~3x,
# V=4096 ~2x the other way).
SELECT_ARGMAX_MAX_V = 256


@njit(**NJIT)
def row_max(q, s):
    """max of the non-NaN entries of q[s] (maxnum skips NaN); -inf when there are none.

    Short rows: a scalar compare-and-select chain (measured faster than the vector loop's
    set-up at V = 16); long rows: the vectorised maxnum loop.
    """
    m = neg_inf(q)
    n = q.shape[1]
    if n < 64:
        for a in range(n):
            v = q[s, a]
            m = v if v > m else m  # a NaN never compares greater: skipped
        return np.float64(m)
    for a in range(n):
        m = maxnum(m, q[s, a])
    return np.float64(m)


@njit(**NJIT)
def row_argmax(q, s):
    """Lowest index of the maximum of the non-NaN entries of q[s]; 0 when all are NaN."""
    n = q.shape[1]
    m = neg_inf(q)
    if n < SELECT_ARGMAX_MAX_V:
        best = 0
        for a in range(n):
            v = q[s, a]
            greater = v > m  # False for NaN: skipped; strict: ties keep the lowest index
            m = v if greater else m
            best = a if greater else best
        if m > -np.inf:
            return best
        # nothing above -inf: the answer is the first -inf entry (0 if the row is all NaN)
    else:
        for a in range(n):
            m = maxnum(m, q[s, a])
    for a in range(n):
        if q[s, a] == m:
            return a
    return 0


@njit(**NJIT)
def out_of_range(ids, bound):
    for i in range(ids.shape[0]):
        if ids[i] < 0 or ids[i] >= bound:
            return True
    return False


@njit(**NJIT)
def not_all_finite(values):
    for i in range(values.shape[0]):
        if not np.isfinite(values[i]):
            return True
    return False
