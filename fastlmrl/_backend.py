"""Backend registry: which implementation of the kernels runs.

Three backends expose the same kernel names and signatures:

``python``
    The pure-Python reference (plain loops over Python scalars).  It defines what every kernel
    means and is the benchmark baseline.
``numba``
    ``@njit(cache=True, nogil=True)`` kernels in :mod:`fastlmrl._numba`.
``cython``
    Compiled ``nogil`` kernels in :mod:`fastlmrl._cython`, built by ``pip install``.

The backend is chosen, in order of precedence, by :func:`use_backend` (a context manager,
this thread only), :func:`set_backend`, the environment variable ``FASTLMRL_BACKEND``, or else the
first one that loads of cython, numba, python.  The choice is resolved once -- at the first kernel
call, and again after :func:`set_backend` (or a changed ``FASTLMRL_BACKEND`` seen by
:func:`get_backend`) -- and bound into the public topic modules (:func:`bind`): a kernel call
neither reads the environment nor looks the backend up.

Cython comes first because it is compiled ahead of time, at
install: its kernels are as fast as Numba's but start at once, where Numba compiles each kernel on
its first use after an install (30-60 s for the demo's kernels on 2 cores, then cached; see
:mod:`fastlmrl._numba._common`).  Numba stays fully available (``set_backend("numba")``,
``FASTLMRL_BACKEND=numba``, and :mod:`fastlmrl.numba_kernels` for users' ``@njit`` code).  A
compiled backend that fails to load is reported by
:func:`show_config` and warned about once per process: fastlmrl never falls back to slow code
silently.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import platform
import sys
import threading
import warnings

__all__ = [
    "BACKENDS",
    "BackendUnavailableWarning",
    "available_backends",
    "get_backend",
    "get_num_threads",
    "set_backend",
    "set_num_threads",
    "show_config",
    "use_backend",
]

#: Every backend name, in the default order: ahead-of-time compiled, then JIT, then the reference.
BACKENDS = ("cython", "numba", "python")

_MODULES = {
    "python": "fastlmrl._python",
    "numba": "fastlmrl._numba",
    "cython": "fastlmrl._cython",
}


class BackendUnavailableWarning(RuntimeWarning):
    """A compiled backend could not be loaded; slower code will run instead."""


_lock = threading.RLock()
_loaded: dict[str, object] = {}
_errors: dict[str, str] = {}
_warned: set[str] = set()
_selected: str | None = None  # set_backend(); None means "default"
_local = threading.local()  # use_backend() override, per thread
_num_threads: int | None = None  # set_num_threads(); None means every core this process may use
_cpu_threads: int | None = None  # cached count of those cores (a system call to find out)

# Direct binding.  The backend for threads without a use_backend() override is resolved once
# (at the first kernel call, and again after set_backend() or a changed FASTLMRL_BACKEND seen by
# get_backend()) and stored here; the public topic modules hold it in a module attribute
# (``_kernels``, registered with bind()) that set_backend() rebinds, so a kernel call costs one
# global and one attribute lookup.  While the backend is unresolved, or while any thread is inside
# use_backend(), those attributes hold _DISPATCH instead, which resolves the calling thread's
# backend at each lookup.
_env: str = os.environ.get("FASTLMRL_BACKEND", "")  # read at import, set_backend, get_backend
_active_name: str | None = None
_active_module = None
_overrides = 0  # use_backend() blocks open, all threads together
_bindings: list[tuple[str, tuple[str, ...]]] = []


def _check_name(name) -> str:
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {type(name).__name__}")
    key = name.strip().lower()
    if key not in _MODULES:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    return key


def _load(name: str):
    """Import backend ``name``; return its module or None (and remember why not)."""
    module = _loaded.get(name)  # fast path, no lock: entries are only ever added
    if module is not None:
        return module
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name in _errors:
            return None
        try:
            module = importlib.import_module(_MODULES[name])
        except Exception as exc:  # ImportError, numba/LLVM errors, a broken .so ...
            _errors[name] = f"{type(exc).__name__}: {exc}"
            if name not in _warned:
                _warned.add(name)
                warnings.warn(
                    f"fastlmrl: the {name} backend is unavailable ({_errors[name]}); "
                    "see fastlmrl.show_config()",
                    BackendUnavailableWarning,
                    stacklevel=4,
                )
            return None
        _loaded[name] = module
        if name == "numba":
            _apply_numba_threads()
        return module


def _default() -> str:
    """The backend FASTLMRL_BACKEND names (as last read), else the first that loads."""
    env = _env.strip()
    if env:
        try:
            name = _check_name(env)
        except ValueError:
            raise ValueError(
                f"FASTLMRL_BACKEND must be one of {', '.join(BACKENDS)}; got {env!r}"
            ) from None
        return name
    for name in BACKENDS:
        if _load(name) is not None:
            return name
    return "python"  # pragma: no cover - the reference always imports


def _module(name: str):
    module = _load(name)
    if module is None:
        raise RuntimeError(
            f"fastlmrl: backend {name!r} was requested but cannot be loaded: {_errors[name]}"
        )
    return module


class _Dispatch:
    """The kernels of the calling thread's backend, looked up at each attribute access: what the
    bound ``_kernels`` attributes hold before the first resolution and while a use_backend()
    block is open in some thread."""

    __slots__ = ()

    def __getattr__(self, name):
        return getattr(kernels(), name)

    def __repr__(self) -> str:
        return "<fastlmrl kernels of the calling thread's backend>"


_DISPATCH = _Dispatch()


def _bound_value():
    return _active_module if _overrides == 0 and _active_module is not None else _DISPATCH


def _rebind() -> None:
    """Store the current binding in every registered module attribute (under _lock)."""
    value = _bound_value()
    for module_name, attrs in _bindings:
        module = sys.modules.get(module_name)
        if module is not None:
            for attr in attrs:
                setattr(module, attr, value)


def bind(module_name: str, *attrs: str):
    """Register module attributes that hold the active backend's kernels; returns their value.

    A public topic module writes ``_kernels = _backend.bind(__name__, "_kernels")`` (under
    ``if not TYPE_CHECKING``, with ``from ._python import <topic> as _kernels`` for readers and
    tools) and calls ``_kernels.<kernel>(...)``.  The value is the active backend's module, or a
    dispatcher while the backend is unresolved or a use_backend() block is open.
    """
    with _lock:
        _bindings.append((module_name, attrs))
        return _bound_value()


def bindings() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The (module name, attribute names) pairs registered with :func:`bind` so far, in order.

    For test tools that must see every kernel call of the public API (the call recorder of
    ``tests/fuzz/cases.py`` puts a recording view of the kernels into each of these attributes
    while it runs, and puts the bound value back after).
    """
    with _lock:
        return tuple(_bindings)


def _resolve():
    """Resolve the backend of threads without an override and bind it (reads FASTLMRL_BACKEND)."""
    global _env, _active_name, _active_module
    with _lock:
        if _active_module is None:
            _env = os.environ.get("FASTLMRL_BACKEND", "")
            name = _selected if _selected is not None else _default()
            module = _module(name)
            _active_name, _active_module = name, module
            _rebind()
        return _active_module


def _invalidate() -> None:
    global _active_name, _active_module
    with _lock:
        _active_name = _active_module = None
        _rebind()


def _sync_environment() -> None:
    """Take a changed FASTLMRL_BACKEND into account (called by get_backend, never per kernel)."""
    value = os.environ.get("FASTLMRL_BACKEND", "")
    if value != _env:
        _invalidate()


def get_backend() -> str:
    """Name of the backend that kernels dispatch to in this thread right now.

    Reads FASTLMRL_BACKEND again: a value changed since the import takes effect from here on
    (kernel calls themselves never read the environment).
    """
    override = getattr(_local, "stack", None)
    if override:
        return override[-1]
    _sync_environment()
    name = _active_name
    if name is None:
        _resolve()
        name = _active_name
    return name


def kernels():
    """The module of the active backend (used by the topics not yet bound with :func:`bind`)."""
    stack = getattr(_local, "stack", None)
    if stack:
        return _module(stack[-1])
    module = _active_module
    if module is None:
        module = _resolve()
    return module


def backend_module(name: str):
    """The module of backend ``name``; raises RuntimeError if it cannot be loaded."""
    name = _check_name(name)
    module = _load(name)
    if module is None:
        raise RuntimeError(f"fastlmrl: backend {name!r} cannot be loaded: {_errors[name]}")
    return module


def set_backend(name: str | None) -> None:
    """Use backend ``name`` ('python', 'numba' or 'cython') from now on; ``None`` restores the
    default.

    Raises ValueError for an unknown name and RuntimeError when that backend cannot be loaded
    (the reason is in :func:`show_config`).  Reads FASTLMRL_BACKEND again (for ``None``).
    """
    global _selected
    key = None
    if name is not None:
        key = _check_name(name)
        backend_module(key)
    with _lock:
        _selected = key
        _invalidate()


@contextlib.contextmanager
def use_backend(name: str):
    """Context manager: run the enclosed code with backend ``name`` (this thread only)."""
    global _overrides
    key = _check_name(name)
    backend_module(key)
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    with _lock:
        _overrides += 1
        if _overrides == 1:
            _rebind()  # every bound topic now dispatches per thread
    stack.append(key)
    try:
        yield key
    finally:
        stack.pop()
        with _lock:
            _overrides -= 1
            if _overrides == 0:
                _rebind()  # back to direct calls


def available_backends() -> tuple[str, ...]:
    """The backends that load on this machine, fastest first."""
    return tuple(name for name in BACKENDS if _load(name) is not None)


def set_num_threads(n: int | None) -> None:
    """Threads used by the parallel kernels (selection over large batches); ``None`` = all cores.

    Results never depend on this number: every random draw is addressed by a counter.
    """
    global _num_threads, _cpu_threads
    if n is not None:
        if isinstance(n, bool) or not isinstance(n, int):
            raise TypeError(f"num_threads must be an int or None, got {type(n).__name__}")
        if n < 1:
            raise ValueError(f"num_threads must be >= 1, got {n}")
    _num_threads = n
    _cpu_threads = _count_cpus()  # the affinity may have changed since it was cached
    if "numba" in _loaded:
        _apply_numba_threads()


def _apply_numba_threads() -> None:
    """Numba's prange kernels take their thread count from numba itself: keep it in step."""
    import numba

    numba.set_num_threads(min(get_num_threads(), numba.config.NUMBA_NUM_THREADS))


def get_num_threads() -> int:
    """Threads the parallel kernels will use (the cores this process may run on, counted once
    and again at each :func:`set_num_threads`, unless a number was set)."""
    global _cpu_threads
    n = _num_threads
    if n is not None:
        return n
    n = _cpu_threads
    if n is None:
        n = _cpu_threads = _count_cpus()
    return n


def _count_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def show_config(print_out: bool = True) -> dict:
    """Report which backends loaded, which did not and why, and the library versions.

    Returns the report as a dict; prints it too unless ``print_out`` is false.
    """
    import numpy

    from . import __version__

    info = {
        "fastlmrl": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": numpy.__version__,
        "backend": get_backend(),
        "num_threads": get_num_threads(),
        "backends": {},
    }
    for name in BACKENDS:
        module = _load(name)
        entry = {"loaded": module is not None}
        if module is None:
            entry["error"] = _errors.get(name, "")
        elif name == "numba":
            import numba

            entry["version"] = numba.__version__
            entry["threading_layer_threads"] = numba.config.NUMBA_NUM_THREADS
        elif name == "cython":
            entry["version"] = getattr(module, "CYTHON_VERSION", "unknown")
        info["backends"][name] = entry
    if print_out:
        lines = [f"fastlmrl {info['fastlmrl']}  (python {info['python']}, numpy {info['numpy']})"]
        lines.append(f"platform: {info['platform']}")
        lines.append(f"active backend: {info['backend']}   threads: {info['num_threads']}")
        for name, entry in info["backends"].items():
            if entry["loaded"]:
                extra = ", ".join(f"{k}={v}" for k, v in entry.items() if k != "loaded")
                lines.append(f"  {name:7s} loaded" + (f" ({extra})" if extra else ""))
            else:
                lines.append(f"  {name:7s} NOT AVAILABLE: {entry['error']}")
        print("\n".join(lines))
    return info
