"""Argument checks shared by the public functions.

Everything here runs before a kernel touches any table: a bad argument raises a ValueError or
TypeError that names it, and nothing has been written.

The validators of *inputs* (:func:`ids`, :func:`values`, :func:`flags`, :func:`table` with
``writeable=False``) return a read-only array as a writeable alias of the same memory
(:func:`kernel_input`, no copy), so that Numba does not compile a second specialisation of the
kernel for it.  Never pass an output through them.

Sizes: :func:`size` refuses at once a count of elements (or iterations) above 2**31
(:data:`MAX_ELEMENTS`) or more bytes than this machine's physical memory, naming the argument and
the number that is too large, instead of a MemoryError, an OverflowError or a computation that
runs for minutes (:func:`array_size` is its form for an array shape).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Callable, Collection, Iterable
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))

# Upper bounds of integer arguments.  Every int a kernel receives is an int64 in the compiled
# backends, so no int argument may exceed INT64_MAX (a larger one would pass here and then raise
# OverflowError in Numba/Cython while the Python reference accepted it).  Iteration counts are
# below 2**31 (at most MAX_ITERATIONS = 2**31 - 1): 2**31 iterations would run for days, so they are
# refused at once instead of looking like a hang.
INT64_MAX = 2**63 - 1
MAX_ITERATIONS = 2**31 - 1
#: The most elements (or loop iterations) one call may ask for (:func:`size`).
MAX_ELEMENTS = 2**31


def table(q: Any, name: str = "q", writeable: bool = True, ndim: int = 2) -> np.ndarray:
    """A float32/float64 C-contiguous array with ``ndim`` dims and no empty axis, used as is."""
    if not isinstance(q, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(q).__name__}")
    if q.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {q.dtype}")
    if q.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {q.shape}")
    if 0 in q.shape:
        raise ValueError(f"{name} must not have an empty axis, got shape {q.shape}")
    if not q.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if writeable and not q.flags.writeable:
        raise ValueError(f"{name} is read-only but is updated in place")
    return kernel_input(q)  # read-only (writeable=False) inputs: no new Numba specialisation


def ids(x: Any, name: str, length: int | None = None) -> np.ndarray:
    """A 1-D int32/int64 contiguous array (other integer dtypes are converted to int64)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "iu":
        if arr.size == 0 and arr.dtype.kind == "f":  # np.asarray([]) is float64
            arr = arr.astype(np.int64)
        else:
            raise TypeError(f"{name} must hold integer ids, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    if arr.dtype not in INDEX_DTYPES:
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name} holds ids too large for int64")
        arr = arr.astype(np.int64)
    return kernel_input(np.ascontiguousarray(arr))


def same_index_dtype(*arrays: np.ndarray) -> list[np.ndarray]:
    """Cast id arrays to one dtype (int32 only when all are int32) so kernels get one signature."""
    if all(a.dtype == np.int32 for a in arrays):
        return list(arrays)
    return [a.astype(np.int64, copy=False) for a in arrays]


def values(x: Any, name: str, length: int | None, dtype: Any) -> np.ndarray:
    """A 1-D contiguous array of real numbers converted to ``dtype``."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if length is not None and arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    return kernel_input(np.ascontiguousarray(arr, dtype=dtype))


def _booleans(x: Any, name: str) -> np.ndarray:
    """``x`` as a boolean array: bool, 0/1 integers or an empty float array (a TypeError for
    another dtype, a ValueError for another integer)."""
    arr = np.asarray(x)
    if arr.dtype != np.bool_:
        if arr.dtype.kind in "iu" or (arr.size == 0 and arr.dtype.kind == "f"):
            if arr.size and not np.isin(arr, (0, 1)).all():
                raise ValueError(f"{name} must be boolean (or 0/1 integers)")
            arr = arr.astype(np.bool_)
        else:
            raise TypeError(f"{name} must be a boolean array, got dtype {arr.dtype}")
    return arr


def flags(x: Any, name: str, length: int) -> np.ndarray:
    """A 1-D boolean array returned as a uint8 view (what the kernels read)."""
    arr = _booleans(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-dimensional, got shape {arr.shape}")
    if arr.shape[0] != length:
        raise ValueError(f"{name} must have length {length}, got {arr.shape[0]}")
    return kernel_input(np.ascontiguousarray(arr).view(np.uint8))


def real_array(x: Any, name: str, ndim: int | None = None, shape: Any = None) -> np.ndarray:
    """An array of real numbers (bool/int/float) with ``ndim`` dims / this ``shape``, not
    converted (:func:`as_dtype` converts it once the call's dtype is known)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return arr


def work_dtype(*arrays: np.ndarray | None) -> np.dtype:
    """float32 when every given array (None skipped) is float32, else float64: the dtype of a
    call's kernel and outputs."""
    if all(a.dtype == np.float32 for a in arrays if a is not None):
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def as_dtype(arr: np.ndarray, dtype: Any) -> np.ndarray:
    """A C-contiguous copy in ``dtype`` unless ``arr`` already is one (a read-only one is passed
    as a writeable alias, :func:`kernel_input`).  For kernel inputs only."""
    return kernel_input(np.ascontiguousarray(arr, dtype=dtype))


def mask(x: Any, shape: Any, name: str = "mask") -> np.ndarray:
    """A boolean (or 0/1 integer) array of ``shape`` as a C-contiguous uint8 view (what the
    kernels read); None = all True."""
    if x is None:
        return np.ones(shape, dtype=np.uint8)
    arr = _booleans(x, name)
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {arr.shape}")
    return kernel_input(np.ascontiguousarray(arr).view(np.uint8))


def not_finite(name: str, values: Any, where: Any = None) -> str:
    """The error text naming the first entry of ``values`` (row-major) that is not finite, only
    among those where ``where`` (same shape) is non-zero when given:
    ``"rewards[1, 2] = nan is not finite"``; ``"invalid <name>"`` when every entry is finite."""
    arr = np.asarray(values)
    bad = ~np.isfinite(arr)
    if where is not None:
        bad &= np.asarray(where).astype(bool)
    found = np.argwhere(bad)
    if found.size:
        pos = tuple(int(i) for i in found[0])
        return f"{name}[{', '.join(map(str, pos))}] = {arr[pos]} is not finite"
    return f"invalid {name}"


def real(
    x: Any,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """A finite real scalar inside the given interval, as a Python float."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(x).__name__}")
    v = float(x)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    lo_ok = low is None or (v > low if low_open else v >= low)
    hi_ok = high is None or (v < high if high_open else v <= high)
    if not (lo_ok and hi_ok):
        lb = "(" if low_open else "["
        hb = ")" if high_open else "]"
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        raise ValueError(f"{name} must be in {lb}{lo}, {hi}{hb}, got {v}")
    return v


def positive_int(x: Any, name: str, minimum: int = 1, maximum: int = INT64_MAX) -> int:
    """An int (not a bool) in [minimum, maximum], as a Python int.  ``maximum`` defaults to the
    int64 limit (what every compiled kernel takes); iteration counts pass MAX_ITERATIONS."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {x}")
    if x > maximum:
        bound = {INT64_MAX: "2**63 - 1", MAX_ITERATIONS: "2**31 - 1"}.get(maximum, str(maximum))
        raise ValueError(f"{name} must be <= {bound}, got {x}")
    return int(x)


def iterations(x: Any, name: str, minimum: int = 1) -> int:
    """An iteration count in [minimum, 2**31 - 1] (:data:`MAX_ITERATIONS`)."""
    return positive_int(x, name, minimum, MAX_ITERATIONS)


def choice(x: Any, name: str, options: Collection[str]) -> str:
    """One of the strings ``options``; anything else (a list, None, ...) is a TypeError or a
    ValueError naming the argument (never "unhashable type")."""
    if not isinstance(x, str):
        raise TypeError(f"{name} must be a str, one of {sorted(options)}, got {type(x).__name__}")
    if x not in options:
        raise ValueError(f"{name} must be one of {sorted(options)}, got {x!r}")
    return x


def physical_memory() -> int:
    """Bytes of physical memory (2**40 when the system does not say)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 40
    if pages <= 0 or page_size <= 0:  # pragma: no cover
        return 1 << 40
    return int(pages) * int(page_size)


def size(
    count: int,
    name: str,
    what: str,
    itemsize: int = 8,
    limit: int | None = MAX_ELEMENTS,
    unit: str = "elements",
) -> None:
    """Refuse at once ``count`` elements of ``itemsize`` bytes: more than ``limit`` (2**31 by
    default; None: no count limit) or more bytes than this machine's physical memory.  The
    ValueError names ``name`` and says where the count comes from (``what``: e.g.
    ``"num_envs * max_new_tokens = 4 * 1099511627776"``, ``"an array of shape (2, 3)"``).  A loop
    count passes ``itemsize=0, unit="iterations"`` (only the count limit applies)."""
    if limit is not None and count > limit:
        raise ValueError(
            f"{name}: {what} is too large: {count} {unit}, more than 2**31 = {limit}"
            if limit == MAX_ELEMENTS
            else f"{name}: {what} is too large: {count} {unit}, more than {limit}"
        )
    need = count * itemsize
    if need > 0:
        have = physical_memory()
        if need > have:
            raise ValueError(
                f"{name}: {what} is too large: {count} {unit} need {need} bytes "
                f"({need / 2**30:.1f} GiB), more than the {have / 2**30:.1f} GiB of memory of "
                "this machine"
            )


def array_size(shape: Iterable[Any], name: str, itemsize: int = 8) -> None:
    """:func:`size` for an array of ``shape`` (ints) of ``itemsize`` bytes per element, without
    the element count limit: refused when it cannot fit in this machine's memory."""
    dims = tuple(int(d) for d in shape)
    count = 1
    for d in dims:
        count *= d
    size(count, name, f"an array of shape {dims}", itemsize, limit=None)


class _Alias:
    """Exposes another array's memory through ``__array_interface__`` (see kernel_input)."""

    __slots__ = ("__array_interface__", "base")

    def __init__(self, interface: dict[str, Any], base: np.ndarray) -> None:
        self.__array_interface__ = interface
        self.base = base


def kernel_input(arr: np.ndarray) -> np.ndarray:
    """``arr`` itself when writeable, else a writeable alias of the same memory (no copy).

    Numba types a read-only array as a different type and compiles a new specialisation of every
    kernel it is passed to (8-10 s each).  Kernels never write their *inputs*, so the wrappers
    hand them this alias of a read-only input instead: the compiled code already in the cache
    runs on it.  Use it only for arguments a kernel reads; an output must stay refused when it is
    read-only.  O(1): the array object is rebuilt over the same buffer, which it keeps alive.
    """
    if arr.flags.writeable or not isinstance(arr, np.ndarray):
        return arr
    interface = dict(arr.__array_interface__)
    interface["data"] = (interface["data"][0], False)
    return np.asarray(_Alias(interface, arr))


def renamed(
    deprecated: dict[str, str] | None = None, ecosystem: dict[str, str] | None = None
) -> Callable[[Any], Any]:
    """Decorator accepting other keyword spellings of a function's parameters (the one mechanism
    for parameter aliases; applied to a class, it wraps the class's ``__init__``, e.g. a config
    dataclass).

    ``deprecated``: {old name: our name} -- our earlier spellings, accepted with a
    ``DeprecationWarning`` naming the new one.  ``ecosystem``: {their name: our name} -- TRL's,
    Gymnasium's or PyTorch's spelling of the same parameter, accepted silently.  Giving two
    spellings of one parameter (as keywords, or ours positionally) is a TypeError naming both.
    The signature, docstring and results are those of the function under our names; a call that
    uses only our names pays one dict check.
    """
    table = {old: (ours, True) for old, ours in (deprecated or {}).items()}
    table.update({theirs: (ours, False) for theirs, ours in (ecosystem or {}).items()})

    def wrap(target: Any) -> Any:
        if isinstance(target, type):
            # wrapping a class's __init__ is the point (mypy calls assigning one unsound)
            target.__init__ = wrap(target.__init__)  # type: ignore[misc]
            return target
        params = inspect.signature(target).parameters
        for ours, _ in table.values():
            if ours not in params:
                raise AssertionError(f"{target.__qualname__} has no parameter {ours!r}")
        positional = [
            p.name
            for p in params.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        where = {name: i for i, name in enumerate(positional)}
        qualname = target.__qualname__.replace(".__init__", "")

        @functools.wraps(target)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if kwargs and any(k in table for k in kwargs):  # (traceable by torch.compile)
                spelled: dict[str, str] = {}
                for other in [k for k in kwargs if k in table]:
                    ours, is_deprecated = table[other]
                    if ours in kwargs or where.get(ours, len(args)) < len(args):
                        first = spelled.get(ours, ours)
                        raise TypeError(
                            f"{qualname}() got both {first!r} and {other!r}, two "
                            f"spellings of the parameter {ours!r}: give one"
                        )
                    if is_deprecated:
                        warnings.warn(
                            f"{qualname}(): the keyword {other!r} is deprecated, use {ours!r}",
                            DeprecationWarning,
                            stacklevel=2,
                        )
                    kwargs[ours] = kwargs.pop(other)
                    spelled[ours] = other
            return target(*args, **kwargs)

        # {other spelling: (ours, deprecated)}, for docs and tests (an attribute of our own on
        # the wrapper, hence the ignore)
        wrapper.renamed = dict(table)  # type: ignore[attr-defined]
        return wrapper

    return wrap
