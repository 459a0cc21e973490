"""The kernel contract: each topic declares its kernels once; everything else is checked against it.

A topic's contract (a :class:`Topic`, declared as ``CONTRACT`` in its public module, e.g.
:data:`fastlmrl.td_learning.CONTRACT`) lists every kernel with

* its arguments in order (:class:`Arg`): name, kind (:class:`Kind`: table, ids, reals, flags,
  real, index, flag, uint64 -- which fixes the dtype and, for Cython, the declared type), whether
  the kernel writes it, the status code the kernel returns when it is bad (and so the argument that
  code names), the table axis an id indexes (the bound an error message quotes);
* the status codes it may return besides those (``BAD_SHAPES``, ``OVERLAPPING_ARRAYS``, ...);
* what it returns (``("status",)``, or e.g. ``("status", "td")`` for a kernel returning a tuple);
* the names of the slots of a statistics output (``results={"stats_out": ("loss", "kl")}``), read
  by name with :meth:`Kernel.read_results`, never by position in the wrappers.

``tests/test_contract.py`` checks, for every topic (:data:`fastlmrl._topics.TOPICS`), that the
Python, Numba (``.py_func``) and Cython (embedded signature, and the ``cdef ..._core`` declarations
of the ``.pxd``) kernels have exactly these names, argument names, order and (Cython) types, that
the kernel modules return only :class:`~fastlmrl._status.Status` values, and -- calling every kernel
of every backend with one argument broken at a time -- that each returns the declared status and
writes nothing.  :func:`raise_for_status` turns a status into the ValueError naming the argument.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from ._status import Status

__all__ = ["Arg", "Kernel", "Kind", "Topic", "raise_for_status"]


class Kind(enum.Enum):
    """What an argument is: its dtype family, dimensions and Cython type."""

    TABLE = "table"  #: 2-D C-contiguous float32/float64 (``real_t[:, ::1]``)
    IDS = "ids"  #: 1-D contiguous int32/int64, one dtype per call (``index_t[::1]``)
    REALS = "reals"  #: 1-D contiguous, of the table's dtype (``real_t[::1]``)
    FLAGS = (
        "flags"  #: 1-D contiguous uint8 0/1 (a bool array viewed as uint8; ``unsigned char[::1]``)
    )
    REAL = "real"  #: a float scalar (``double``)
    INDEX = "index"  #: an int64 scalar (``Py_ssize_t``)
    FLAG = "flag"  #: a bool scalar (``bint``)
    UINT64 = "uint64"  #: a uint64 scalar (``uint64_t``): RNG keys and counters
    ACTIONS = "actions"  #: 1-D contiguous int64 output, e.g. chosen actions (``int64_t[::1]``)
    #: a worker count: any Python int in a Cython ``def`` (untyped, clamped to [1, cores]),
    #: ``int`` in the ``cdef`` core; results never depend on it
    THREADS = "threads"
    #: any other array; its :attr:`Arg.ctype` spells the Cython type (``"double[:, :, ::1]"``)
    ARRAY = "array"
    #: any other scalar; its :attr:`Arg.ctype` spells the Cython type (``"int64_t"``)
    SCALAR = "scalar"

    @property
    def is_array(self) -> bool:
        return self in (Kind.TABLE, Kind.IDS, Kind.REALS, Kind.FLAGS, Kind.ACTIONS, Kind.ARRAY)

    def cython_type(self, written: bool, core: bool = False) -> str:
        """The type a Cython ``def`` wrapper (or, ``core=True``, a ``cdef`` core) declares for
        this kind."""
        if self == Kind.THREADS:
            return "int" if core else ""
        if self in (Kind.ARRAY, Kind.SCALAR):
            raise ValueError(f"an argument of kind {self.name} spells its type in Arg.ctype")
        base = {
            Kind.TABLE: "real_t[:, ::1]",
            Kind.IDS: "index_t[::1]",
            Kind.REALS: "real_t[::1]",
            Kind.FLAGS: "unsigned char[::1]",
            Kind.REAL: "double",
            Kind.INDEX: "Py_ssize_t",
            Kind.FLAG: "bint",
            Kind.UINT64: "uint64_t",
            Kind.ACTIONS: "int64_t[::1]",
        }[self]
        return base if written or not self.is_array else "const " + base


#: How :meth:`Kernel.describe` writes each kind.
_KIND_TEXT = {
    Kind.TABLE: "2-D C-contiguous float32 or float64 array",
    Kind.IDS: "1-D contiguous int32 or int64 array (one index dtype per call)",
    Kind.REALS: "1-D contiguous array of the table's float dtype",
    Kind.FLAGS: "1-D contiguous uint8 array of 0/1 (a bool array viewed as uint8)",
    Kind.REAL: "float",
    Kind.INDEX: "int",
    Kind.FLAG: "bool",
    Kind.UINT64: "uint64 (a random stream's key or counter)",
    Kind.ACTIONS: "1-D contiguous int64 array",
    Kind.THREADS: "int, worker threads (results never depend on it)",
    Kind.ARRAY: "array",
    Kind.SCALAR: "scalar",
}


@dataclass(frozen=True)
class Arg:
    """One kernel argument.

    ``status``: the code the kernel returns when this argument is bad (None: never blamed on it).
    ``bound``: for ids, ``(table argument, axis)`` -- the valid range is ``[0, table.shape[axis])``.
    ``domain``: for a scalar, its valid range as text (``"(0, 1]"``), quoted by the error.
    ``ctype``: the Cython type, without ``const``, of a :attr:`Kind.ARRAY` or :attr:`Kind.SCALAR`
    argument (``"double[:, :, ::1]"``, ``"int64_t"``); the other kinds imply theirs.
    ``other_statuses``: further codes that also name this argument (``counts``: BAD_COUNTS for its
    shape, BAD_COUNT_VALUES for an entry).  Several arguments may share one code (``lr``, ``eps``:
    BAD_HYPERPARAMETERS); the error then names the first whose value is outside its ``domain``.
    """

    name: str
    kind: Kind
    written: bool = False
    status: Status | None = None
    bound: tuple[str, int] | None = None
    domain: str | None = None
    ctype: str | None = None
    other_statuses: tuple[Status, ...] = ()

    def cython_type(self, core: bool = False) -> str:
        """The type a Cython ``def`` wrapper (or, ``core=True``, a ``cdef`` core) declares."""
        if self.ctype is None:
            return self.kind.cython_type(self.written, core)
        if self.written or not self.kind.is_array:
            return self.ctype
        return "const " + self.ctype


@dataclass(frozen=True)
class Kernel:
    """One kernel: its arguments in order, the extra statuses it returns, what it returns."""

    name: str
    args: tuple[Arg, ...]
    statuses: tuple[Status, ...] = ()  #: codes not tied to one argument (BAD_SHAPES, ...)
    returns: tuple[str, ...] = ("status",)
    results: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    doc: str = ""
    #: C type of each extra return (``returns[1:]``) that is not a ``double``; the Cython core
    #: writes it through a pointer argument (``int64_t* action``)
    return_types: Mapping[str, str] = field(default_factory=dict)
    #: the topic's own text for a status that the generic messages cannot give (an entry of a
    #: table read at the batch's ids, ...): ``{status: explain(args, shown) -> message}``, with
    #: the arguments by name and ``shown(name)`` the name to print
    messages: Mapping[Status, Callable[[Mapping[str, Any], Callable[[str], str]], str]] = field(
        default_factory=dict
    )

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(f"{self.name} has no argument {name!r}")

    @property
    def written(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args if a.written)

    def returned_statuses(self) -> tuple[Status, ...]:
        """Every status the kernel may return (0 included), in declaration order."""
        codes = [Status.OK] + list(self.statuses)
        codes += [a.status for a in self.args if a.status is not None]
        codes += [code for a in self.args for code in a.other_statuses]
        return tuple(dict.fromkeys(codes))

    def argument_of(self, status: int) -> str | None:
        """The argument that ``status`` names for this kernel (None for a code of the call)."""
        for a in self.args:
            if a.status == status or status in a.other_statuses:
                return a.name
        return None

    def bind(self, *args) -> dict:
        """``{argument name: value}`` of a positional call of this kernel."""
        if len(args) != len(self.args):
            raise TypeError(f"{self.name} takes {len(self.args)} arguments, got {len(args)}")
        return dict(zip(self.arg_names, args))

    def describe(self) -> str:
        """The kernel's documentation, from its contract: the call, each argument (what it is,
        its valid range, whether the kernel writes it, the status blaming it), the statuses of
        the call and the named slots of its results.  ``fastlmrl.numba_kernels`` gives each Numba
        kernel this text as its ``__doc__``."""
        returns = ", ".join(self.returns)
        lines = [f"{self.name}({', '.join(self.arg_names)}) -> {returns}", ""]
        if self.doc:
            lines += [self.doc, ""]
        lines.append("Arguments (positional, in this order):")
        width = max((len(a.name) for a in self.args), default=0)
        for a in self.args:
            what = _KIND_TEXT[a.kind] if a.ctype is None else f"{_KIND_TEXT[a.kind]} ({a.ctype})"
            if a.bound is not None:
                table, axis = a.bound
                what += f", each in [0, {table}.shape[{axis}])"
            if a.domain is not None:
                what += f", in {a.domain}"
            if a.written:
                what += "; WRITTEN by the kernel"
            codes = ([a.status] if a.status is not None else []) + list(a.other_statuses)
            if codes:
                what += "; bad: " + ", ".join(f"{c.name} ({int(c)})" for c in codes)
            lines.append(f"  {a.name:<{width}}  {what}")
        lines += ["", "Returns " + returns + ": status 0 (OK) or the first failed check, "]
        lines[-1] += "before anything is written:"
        for code in self.returned_statuses():
            name = self.argument_of(code)
            lines.append(f"  {int(code):>3} {code.name}" + (f" ({name})" if name else ""))
        for arg, names in self.results.items():
            lines += [
                "",
                f"Slots of {arg}: " + ", ".join(f"[{i}] {n}" for i, n in enumerate(names)),
            ]
        return "\n".join(lines)

    def raise_for_call(
        self, status: int, args: tuple, public: Mapping[str, str] | None = None
    ) -> None:
        """:func:`raise_for_status` of a positional call ``args`` of this kernel (no-op for 0)."""
        if status:
            raise_for_status(status, self, self.bind(*args), public)

    def read_results(self, arg: str, values) -> NamedTuple:
        """The slots of output ``arg`` as a named tuple (``stats.loss``, not ``stats[0]``)."""
        names = self.results[arg]
        if len(values) != len(names):
            raise ValueError(f"{self.name}.{arg} has {len(names)} slots, got {len(values)}")
        return _result_type(self.name, arg, names)(*(values[i] for i in range(len(names))))


_RESULT_TYPES: dict = {}


def _result_type(kernel: str, arg: str, names: tuple[str, ...]):
    key = (kernel, arg, names)
    cls = _RESULT_TYPES.get(key)
    if cls is None:
        cls = _RESULT_TYPES[key] = NamedTuple(f"{kernel}_{arg}", [(n, Any) for n in names])
    return cls


@dataclass(frozen=True)
class Topic:
    """The contract of one topic: its kernels, in the order of the backend modules' ``__all__``."""

    name: str
    kernels: tuple[Kernel, ...]

    def __getitem__(self, name: str) -> Kernel:
        for k in self.kernels:
            if k.name == name:
                return k
        raise KeyError(f"topic {self.name} has no kernel {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(k.name for k in self.kernels)


def raise_for_status(
    status: int, kernel: Kernel, args: Mapping[str, Any], public: Mapping[str, str] | None = None
) -> None:
    """Turn a kernel status into the ValueError naming the argument (no-op for 0).

    ``args`` maps the kernel's argument names to the values it was called with (at least the
    blamed argument and the tables its bound refers to; :meth:`Kernel.bind` builds it from a
    positional call); ``public`` renames arguments for the message (e.g. ``nodes`` ->
    ``argmax_tree.nodes``).  A status the kernel's contract does not declare is an internal error;
    NO_MEMORY (scratch memory a kernel could not allocate) is a MemoryError for every kernel.
    """
    if status == 0:
        return
    if status == Status.NO_MEMORY:  # any kernel that allocates scratch: names no argument
        raise MemoryError(f"fastlmrl: kernel {kernel.name} could not allocate its scratch memory")
    public = public or {}

    def shown(name):
        return public.get(name, name)

    try:
        code = Status(status)
    except ValueError:
        code = None
    if code is None or code not in kernel.returned_statuses():
        raise ValueError(
            f"internal error: kernel {kernel.name} returned status {status}, which "
            "its contract does not declare"
        )
    explain = kernel.messages.get(code)
    if explain is not None:
        raise ValueError(explain(args, shown))
    if code == Status.BAD_SHAPES:  # the wrappers always pass consistent shapes
        raise ValueError(
            "internal error: array arguments of inconsistent shapes "
            f"(status {int(Status.BAD_SHAPES)})"
        )
    if code == Status.OVERLAPPING_ARRAYS:
        _raise_overlap(kernel, args, shown)
    name = kernel.argument_of(code)
    if name is None:  # a code of the call that names no argument
        raise ValueError(f"internal error: kernel {kernel.name} returned {code.name} ({int(code)})")
    sharing = [a for a in kernel.args if a.status == code and a.domain is not None]
    if len(sharing) > 1:  # the first of them whose value is outside its domain
        name = next((a.name for a in sharing if _outside(args.get(a.name), a.domain)), name)
    arg = kernel.arg(name)
    value = args.get(name)
    if arg.kind == Kind.IDS and arg.bound is not None and value is not None:
        table, axis = arg.bound
        bound = np.shape(args[table])[axis]
        arr = np.asarray(value)
        bad = np.flatnonzero((arr < 0) | (arr >= bound))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{shown(name)}[{i}] = {int(arr[i])} is out of range [0, {bound})")
    elif arg.kind == Kind.INDEX and arg.bound is not None and value is not None:
        table, axis = arg.bound
        bound = np.shape(args[table])[axis]
        raise ValueError(f"{shown(name)} = {int(value)} is out of range [0, {bound})")
    elif arg.kind == Kind.REALS and value is not None:
        arr = np.asarray(value)
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{shown(name)}[{i}] = {arr[i]} is not finite")
    elif arg.kind == Kind.ARRAY and value is not None and np.asarray(value).dtype.kind == "f":
        arr = np.asarray(value)  # any float array: its first entry that is not finite
        cells = np.argwhere(~np.isfinite(arr))
        if cells.size:
            index = tuple(int(i) for i in cells[0])
            where = ", ".join(map(str, index))
            raise ValueError(f"{shown(name)}[{where}] = {arr[index]} is not finite")
    elif arg.kind == Kind.REAL and value is not None:
        if arg.domain is not None:
            raise ValueError(f"{shown(name)} must be in {arg.domain}, got {float(value)}")
        raise ValueError(f"{shown(name)} = {float(value)} is not finite")
    elif arg.kind == Kind.SCALAR and value is not None and arg.domain is not None:
        raise ValueError(f"{shown(name)} must be in {arg.domain}, got {value}")
    raise ValueError(f"invalid {shown(name)}")


def _outside(value, domain: str | None) -> bool:
    """Is ``value`` outside the interval ``domain`` (``"[0, 1)"``, ``"(0, inf)"``; NaN is)?
    False when the value is missing or the domain is not written as an interval."""
    if domain is None:
        return False
    bounds = re.fullmatch(r"\s*([\[(])\s*([^,]+?)\s*,\s*([^\])]+?)\s*([\])])\s*", domain)
    if value is None or bounds is None:
        return False
    try:
        low, high, x = float(bounds[2]), float(bounds[3]), float(value)
    except (TypeError, ValueError):
        return False
    above = low <= x if bounds[1] == "[" else low < x
    below = x <= high if bounds[4] == "]" else x < high
    return not (above and below)


def _raise_overlap(kernel: Kernel, args: Mapping[str, Any], shown) -> None:
    """After OVERLAPPING_ARRAYS (nothing written): the error naming the input that shares memory
    with an array the call writes.  O(1) per pair (address ranges)."""
    arrays = {n: v for n, v in args.items() if isinstance(v, np.ndarray)}
    for wname in kernel.written:
        w = arrays.get(wname)
        if w is None:
            continue
        for name, x in arrays.items():
            if name != wname and x.size and np.may_share_memory(w, x):
                raise ValueError(
                    f"{shown(name)} shares memory with {shown(wname)}, which this "
                    f"call writes in place; pass a copy of {shown(name)}"
                )
    raise ValueError("array arguments share memory with an array this call writes")
