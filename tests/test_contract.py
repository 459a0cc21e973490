"""The kernel contract (fastlmrl/_contract.py): one Status enum, each migrated topic's kernels
checked against the contract its public module declares -- names, argument names and order,
Cython types (const = not written), the statuses each kernel returns and the argument each names.
"""

import ast
import importlib
import importlib.machinery
import importlib.util
import inspect
import os
import re
import sys
from dataclasses import replace

import numpy as np
import pytest

import fastlmrl
import fastlmrl.numba_kernels
from fastlmrl import _backend, _status
from fastlmrl._contract import Arg, Kernel, Kind, Topic, raise_for_status
from fastlmrl._status import Status
from fastlmrl._topics import TOPICS

PACKAGE = os.path.dirname(fastlmrl.__file__)
BACKENDS = ("python", "numba", "cython")


def contract(topic):
    return importlib.import_module(f"fastlmrl.{topic}").CONTRACT


# ----------------------------------------------------------------------------- the enum
def test_status_values_are_unique_and_the_shared_ones_unchanged():
    assert len({int(s) for s in Status}) == len(Status)
    assert [(s.name, int(s)) for s in Status][:9] == [
        ("OK", 0),
        ("BAD_STATES", 1),
        ("BAD_ACTIONS", 2),
        ("BAD_NEXT_STATES", 3),
        ("BAD_NEXT_ACTIONS", 4),
        ("BAD_REWARDS", 5),
        ("BAD_OFFSETS", 6),
        ("BAD_SHAPES", 7),
        ("OVERLAPPING_ARRAYS", 8),
    ]
    # the old module constants stay, as plain ints (Numba globals)
    for name in ("OK", "BAD_STATES", "BAD_REWARDS", "BAD_SHAPES", "OVERLAPPING_ARRAYS"):
        value = getattr(_status, name)
        assert type(value) is int and value == Status[name]
    assert fastlmrl.Status is Status and fastlmrl.numba_kernels.Status is Status


def test_status_pxd_is_generated_from_the_enum():
    with open(os.path.join(PACKAGE, "_cython", "status.pxd")) as handle:
        text = handle.read()
    assert text == _status.pxd_text(), "run: python -m fastlmrl._status --write"
    assert f"    BAD_ALPHA = {int(Status.BAD_ALPHA)}\n" in text


def test_status_constants_are_generated_from_the_enum():
    """Every member is a plain int constant of fastlmrl._status, written out in the module (the
    kernel modules import them; Numba reads them as compile-time constants)."""
    with open(os.path.join(PACKAGE, "_status.py")) as handle:
        source = handle.read()
    assert _status.with_constants(source) == source, "run: python -m fastlmrl._status --write"
    assert "BAD_ALPHA = 12\n" in _status.constants_text()
    for member in Status:
        value = getattr(_status, member.name)
        assert type(value) is int and value == member, member


def _returned_literals_python(path):
    """Non-zero int literals returned (alone or first in a tuple) and status-like names bound to
    int literals, in a Python kernel module."""
    with open(path) as handle:
        tree = ast.parse(handle.read())
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Return) and node.value is not None:
            value = node.value.elts[0] if isinstance(node.value, ast.Tuple) else node.value
            if isinstance(value, ast.Constant) and type(value.value) is int and value.value:
                bad.append(f"line {node.lineno}: return {value.value}")
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name) and (
                    target.id.startswith("BAD_") or target.id in Status.__members__
                ):
                    bad.append(f"line {node.lineno}: {target.id} = {node.value.value}")
    return bad


@pytest.mark.parametrize("topic", TOPICS)
def test_migrated_topics_return_only_enum_values(topic):
    bad = {}
    for backend in ("python", "numba"):
        found = _returned_literals_python(os.path.join(PACKAGE, f"_{backend}", f"{topic}.py"))
        if found:
            bad[backend] = found
        module = importlib.import_module(f"fastlmrl._{backend}.{topic}")
        for name, value in vars(module).items():
            if name in Status.__members__:
                assert value == Status[name] and type(value) is int, (backend, name)
    with open(os.path.join(PACKAGE, "_cython", f"{topic}.pyx")) as handle:
        pyx = handle.read()
    found = [m.group(0) for m in re.finditer(r"return\s+[1-9]\d*\b", pyx)]
    found += re.findall(r"^\s*cdef enum[^\n]*\n(?:\s+[A-Z_]+ = \d+[^\n]*\n)+", pyx, re.M)
    if found:
        bad["cython"] = found
    assert "from fastlmrl._cython cimport status" in pyx
    assert not bad, bad


# ----------------------------------------------------------------------------- signatures
def _split_args(text):
    """Top-level comma split of a C/Cython argument list."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return [" ".join(p.split()) for p in parts]


def _cython_declarations(source, prefix):
    """{function name: [(type, name), ...]} of every ``<prefix> name(args)`` in ``source``."""
    found = {}
    pattern = prefix + r"\s+(\w+)\(([^)]*(?:\)[^:)]*)*?)\)\s*(?:noexcept nogil)?\s*:?"
    for match in re.finditer(pattern, source):
        pairs = []
        for arg in _split_args(match.group(2)):
            m = re.match(r"(.*?)\s*(\w+)$", arg)
            pairs.append((re.sub(r"\s*\*", " *", m.group(1)).strip(), m.group(2)))
        found[match.group(1)] = pairs
    return found


def contract_mismatches(topic: Topic, backend: str) -> list:
    """Every way backend ``backend``'s implementation of ``topic`` departs from its contract."""
    module = importlib.import_module(f"fastlmrl._{backend}.{topic.name}")
    problems = []
    if sorted(module.__all__) != sorted(topic.names):
        problems.append(f"__all__ {sorted(module.__all__)} != contract {sorted(topic.names)}")
    for kernel in topic.kernels:
        fn = getattr(module, kernel.name, None)
        if fn is None:
            problems.append(f"{kernel.name}: missing")
            continue
        fn = getattr(fn, "py_func", fn)  # numba: the Python function it compiles
        params = inspect.signature(fn).parameters
        names = tuple(params)
        if names != kernel.arg_names:
            problems.append(f"{kernel.name}: arguments {names} != contract {kernel.arg_names}")
        for p in params.values():
            if p.default is not inspect.Parameter.empty or p.kind not in (
                p.POSITIONAL_OR_KEYWORD,
                p.POSITIONAL_ONLY,
            ):
                problems.append(f"{kernel.name}: {p.name} is not a plain positional argument")
    if backend == "cython":
        base = os.path.join(PACKAGE, "_cython", topic.name)
        with open(base + ".pyx") as handle:
            defs = _cython_declarations(handle.read(), r"(?m)^def")
        with open(base + ".pxd") as handle:
            cores = _cython_declarations(handle.read(), r"cdef int")
        for kernel in topic.kernels:
            expected = [(a.cython_type(), a.name) for a in kernel.args]
            if defs.get(kernel.name) != expected:
                problems.append(f"{kernel.name}: def {defs.get(kernel.name)} != {expected}")
            problems += [
                f"{kernel.name}: scalar {a.name} declared written"
                for a in kernel.args
                if a.written and not a.kind.is_array
            ]
            core = [(a.cython_type(core=True), a.name) for a in kernel.args]
            core += [
                (kernel.return_types.get(name, "double") + " *", name)
                for name in kernel.returns[1:]
            ]
            if cores.get(kernel.name + "_core") != core:
                problems.append(f"{kernel.name}_core: {cores.get(kernel.name + '_core')} != {core}")
    return problems


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("topic", TOPICS)
def test_kernels_match_their_contract(topic, backend):
    assert contract_mismatches(contract(topic), backend) == []


def _damaged(topic: Topic, how: str) -> Topic:
    kernel = topic.kernels[0]
    args = list(kernel.args)
    if how == "order":
        args[1], args[2] = args[2], args[1]
    elif how == "name":
        args[-1] = replace(args[-1], name=args[-1].name + "_x")
    elif how == "written":
        args[-1] = replace(args[-1], written=not args[-1].written)
    elif how == "kind":
        args[-1] = replace(args[-1], kind=Kind.IDS, ctype=None)
    elif how == "missing kernel":
        return Topic(topic.name, topic.kernels + (Kernel("no_such_kernel", ()),))
    elif how == "extra arg":
        args.append(Arg("extra", Kind.REAL))
    return Topic(topic.name, (replace(kernel, args=tuple(args)),) + topic.kernels[1:])


@pytest.mark.parametrize("how", ["order", "name", "written", "kind", "missing kernel", "extra arg"])
@pytest.mark.parametrize("topic", TOPICS)
def test_a_wrong_contract_is_detected(topic, how):
    damaged = _damaged(contract(topic), how)
    found = {backend: contract_mismatches(damaged, backend) for backend in BACKENDS}
    if how in ("written", "kind"):  # only the Cython declarations spell types
        assert found["cython"] and not found["python"] and not found["numba"], found
    else:
        assert all(found.values()), found


# ----------------------------------------------------------------------------- statuses
def _topic_cases(topic: str):
    """``tests/contract_cases/<topic>.py`` when the topic has one: its ``valid_args(kernel,
    dtype)`` (a dict of valid arguments, or None for the generic ones below) and
    ``breakages(kernel, args)`` ((description, broken args, expected status) triples, or None for
    the generic ones) cover kernels whose arguments the generic builders cannot make."""
    folder = os.path.join(os.path.dirname(os.path.abspath(__file__)), "contract_cases")
    if not os.path.exists(os.path.join(folder, f"{topic}.py")):
        return None
    if "contract_cases" not in sys.modules:  # the folder as a package: ``from ._common import``
        spec = importlib.machinery.ModuleSpec("contract_cases", None, is_package=True)
        spec.submodule_search_locations = [folder]
        sys.modules["contract_cases"] = importlib.util.module_from_spec(spec)
    return importlib.import_module(f"contract_cases.{topic}")


def _args_and_breakages(topic: str, kernel: Kernel, dtype):
    cases = _topic_cases(topic)
    args = None
    if cases is not None and hasattr(cases, "valid_args"):
        args = cases.valid_args(kernel, dtype)
    if args is None:
        args = _valid_args(kernel, dtype)
    broken = None
    if cases is not None and hasattr(cases, "breakages"):
        broken = cases.breakages(kernel, args)
    if broken is None:
        broken = _breakages(kernel, args)
    return args, list(broken)


def _valid_args(kernel: Kernel, dtype, n=3, shape=(3, 4), rng=None):
    rng = rng or np.random.default_rng(0)
    args = {}
    for arg in kernel.args:
        if arg.kind == Kind.TABLE:
            args[arg.name] = rng.standard_normal(shape).astype(dtype)
        elif arg.kind == Kind.IDS:
            table, axis = arg.bound
            args[arg.name] = rng.integers(0, shape[axis], n).astype(np.int64)
        elif arg.kind == Kind.REALS:
            args[arg.name] = rng.standard_normal(n).astype(dtype)
        elif arg.kind == Kind.FLAGS:
            args[arg.name] = np.array([0, 1, 0][:n], np.uint8)
        elif arg.kind == Kind.REAL:
            args[arg.name] = 0.5
        elif arg.kind == Kind.INDEX:
            args[arg.name] = 1
        elif arg.kind == Kind.FLAG:
            args[arg.name] = False
        elif arg.kind == Kind.UINT64:
            args[arg.name] = np.uint64(5)
        elif arg.kind == Kind.ACTIONS:
            args[arg.name] = np.full(n, -7, np.int64)
        elif arg.kind == Kind.THREADS:
            args[arg.name] = 1
    return args


def _breakages(kernel: Kernel, args: dict):
    """(description, broken args, expected status) for each declared status."""
    for arg in kernel.args:
        if arg.status is None:
            continue
        broken = dict(args)
        value = args[arg.name]
        if arg.kind == Kind.IDS:
            table, axis = arg.bound
            value = value.copy()
            value[-1] = args[table].shape[axis]
        elif arg.kind == Kind.INDEX:
            table, axis = arg.bound
            value = args[table].shape[axis]
        elif arg.kind == Kind.REALS:
            value = value.copy()
            value[1] = np.nan
        elif arg.kind == Kind.REAL:
            value = float("nan")
        broken[arg.name] = value
        yield arg.name, broken, arg.status
    arrays = [a for a in kernel.args if a.kind != Kind.TABLE and a.kind.is_array]
    if Status.BAD_SHAPES in kernel.statuses:
        for arg in arrays:
            broken = dict(args)
            broken[arg.name] = args[arg.name][:-1].copy()
            yield f"{arg.name} short", broken, Status.BAD_SHAPES
    if Status.OVERLAPPING_ARRAYS in kernel.statuses:
        out = next(a for a in arrays if a.written)
        for arg in arrays:
            if not arg.written and (
                arg.kind == out.kind or (arg.kind, out.kind) == (Kind.IDS, Kind.ACTIONS)
            ):  # int64 ids over an int64 output
                broken = dict(args)
                broken[arg.name] = args[out.name]
                yield f"{arg.name} is {out.name}", broken, Status.OVERLAPPING_ARRAYS


def _cases():
    for topic in TOPICS:
        for kernel in contract(topic).kernels:
            yield pytest.param(topic, kernel.name, id=f"{topic}.{kernel.name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("topic, name", list(_cases()))
def test_each_declared_status_is_returned_and_nothing_written(topic, name, backend, dtype):
    kernel = contract(topic)[name]
    fn = getattr(_backend.backend_module(backend), name)
    args, breakages = _args_and_breakages(topic, kernel, dtype)
    result = fn(*(args[a] for a in kernel.arg_names))
    status = result[0] if isinstance(result, tuple) else result
    assert status == 0 and (not isinstance(result, tuple) or len(result) == len(kernel.returns))
    seen = set()
    for what, broken, expected in breakages:
        before = {k: v.copy() for k, v in broken.items() if isinstance(v, np.ndarray)}
        result = fn(*(broken[a] for a in kernel.arg_names))
        status = result[0] if isinstance(result, tuple) else result
        assert status == expected, (what, status, expected)
        assert status in kernel.returned_statuses()
        for k, v in before.items():
            np.testing.assert_array_equal(broken[k], v, err_msg=f"{what}: {k} was written")
        seen.add(expected)
    assert seen == set(kernel.returned_statuses()) - {Status.OK}


@pytest.mark.parametrize("topic, name", list(_cases()))
def test_raise_for_status_names_the_argument(topic, name):
    kernel = contract(topic)[name]
    args, breakages = _args_and_breakages(topic, kernel, np.float64)
    for what, broken, expected in breakages:
        if expected == Status.BAD_SHAPES:
            message = "internal error: array arguments of inconsistent shapes"
        elif expected == Status.OVERLAPPING_ARRAYS:
            message = what.split(" is ")[0] + " shares memory with " + what.split(" is ")[1]
        else:
            message = kernel.argument_of(expected)
        with pytest.raises(ValueError, match=re.escape(message)):
            raise_for_status(expected, kernel, broken)
    raise_for_status(0, kernel, args)  # no-op
    undeclared = next(s for s in Status if s not in kernel.returned_statuses())
    with pytest.raises(ValueError, match="does not declare"):
        raise_for_status(undeclared, kernel, args)


def test_raise_for_status_messages():
    kernel = contract("td_learning")["q_learning_update"]
    q = np.zeros((2, 3))
    args = dict(q=q, states=np.array([0, 2]), rewards=np.array([1.0, np.inf]), alpha=2.0)
    with pytest.raises(ValueError, match=r"^states\[1\] = 2 is out of range \[0, 2\)$"):
        raise_for_status(Status.BAD_STATES, kernel, args)
    with pytest.raises(ValueError, match=r"^rewards\[1\] = inf is not finite$"):
        raise_for_status(Status.BAD_REWARDS, kernel, args)
    with pytest.raises(ValueError, match=r"^alpha must be in \(0, 1\], got 2.0$"):
        raise_for_status(Status.BAD_ALPHA, kernel, args)
    with pytest.raises(ValueError, match=r"^s\[1\] = 2"):
        raise_for_status(Status.BAD_STATES, kernel, args, public={"states": "s"})
    one = contract("td_learning")["q_learning_update_one"]
    with pytest.raises(ValueError, match=r"^next_state = 5 is out of range \[0, 2\)$"):
        raise_for_status(Status.BAD_NEXT_STATES, one, dict(q=q, next_state=5))


def test_results_are_read_by_name():
    kernel = Kernel(
        "toy_loss",
        (Arg("stats_out", Kind.REALS, written=True),),
        results={"stats_out": ("loss", "kl", "clipped")},
    )
    stats = kernel.read_results("stats_out", np.array([1.5, 0.25, 3.0]))
    assert (stats.loss, stats.kl, stats.clipped) == (1.5, 0.25, 3.0)
    with pytest.raises(ValueError, match="3 slots"):
        kernel.read_results("stats_out", np.zeros(2))


def test_contract_bind_and_lookup():
    kernel = contract("td_learning")["q_learning_update"]
    assert kernel.bind(*range(9))["gamma"] == 7
    with pytest.raises(TypeError, match="takes 9 arguments"):
        kernel.bind(1, 2)
    with pytest.raises(KeyError):
        contract("td_learning")["no_such_kernel"]
    assert kernel.written == ("q", "td_out")
    assert kernel.argument_of(Status.BAD_NEXT_STATES) == "next_states"


@pytest.mark.parametrize("topic", TOPICS)
def test_public_module_calls_only_its_bound_kernels(topic):
    """Direct binding: the public module reaches kernels through ``_kernels`` (its topic) and
    ``_tree_kernels``, never by a string lookup of ``_backend.kernels()``; each name it calls on
    ``_kernels`` is a kernel of its contract."""
    path = os.path.join(PACKAGE, f"{topic}.py")
    with open(path) as handle:
        source = handle.read()
    assert "_backend.kernels()" not in source
    called = set(re.findall(r"\b_kernels\.(\w+)\(", source))
    assert called and called <= set(contract(topic).names), called


def test_numba_kernels_are_documented_from_their_contracts():
    """Every kernel a user's ``@njit`` code can import from ``fastlmrl.numba_kernels`` carries its
    contract written out (``help(kernel)``): each argument by name and each status it returns
    with its number; and every exported kernel belongs to exactly one topic's contract."""
    import fastlmrl.numba_kernels as nk

    owner = {}
    for topic in TOPICS:
        for kernel in contract(topic).kernels:
            assert kernel.name not in owner, (kernel.name, owner.get(kernel.name), topic)
            owner[kernel.name] = kernel
    assert sorted(owner) == sorted(nk.__all__)
    for name, kernel in owner.items():
        doc = getattr(nk, name).__doc__
        assert doc.startswith(f"{name}({', '.join(kernel.arg_names)}) -> "), name
        for arg in kernel.arg_names:
            assert re.search(rf"^  {arg} +\S", doc, re.M), (name, arg)
        for code in kernel.returned_statuses():
            assert re.search(rf"^ *{int(code)} {code.name}\b", doc, re.M), (name, code)
        for slots in kernel.results.values():
            assert all(f"] {slot}" in doc for slot in slots), name
