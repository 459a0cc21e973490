"""Contract cases of fastlmrl.permutations (tests/test_contract.py): the scratch arrays
``uniforms`` (n) and ``starts`` (n + 1), too short or sharing memory with another array."""

import numpy as np

from fastlmrl._status import Status

N = 5


def valid_args(kernel, dtype):
    return dict(
        key=np.uint64(5),
        counter=np.uint64(0),
        out=np.full(N, -7, np.int64),
        uniforms=np.full(N, -7.0),
        starts=np.full(N + 1, -7, np.int64),
    )


def breakages(kernel, args):
    for name in ("uniforms", "starts"):
        broken = dict(args)
        broken[name] = args[name][:-1].copy()
        yield f"{name} short", broken, Status.BAD_SHAPES
    buf = np.full(3 * N, -7, np.int64)
    broken = dict(args, out=buf[:N], starts=buf[N - 1 : 2 * N])  # one shared element
    yield "starts is out", broken, Status.OVERLAPPING_ARRAYS
    broken = dict(args, out=buf[:N], uniforms=buf[N - 1 : 2 * N - 1].view(np.float64))
    yield "uniforms is out", broken, Status.OVERLAPPING_ARRAYS
    floats = np.full(3 * N, -7.0)
    broken = dict(args, uniforms=floats[:N], starts=floats[N - 1 : 2 * N].view(np.int64))
    yield "starts is uniforms", broken, Status.OVERLAPPING_ARRAYS
