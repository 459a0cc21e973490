"""A check shared by the kernel test files: array arguments of inconsistent shapes are rejected
(status BAD_SHAPES) before anything is written."""

import numpy as np

from fastlmrl._status import BAD_SHAPES


def assert_rejects_bad_shapes(module, kernel, args, skip=()):
    """``args`` (name -> value) is a valid call: it returns 0.  With each array in turn one element
    shorter along each axis (but ``skip``'s (name, axis)) the kernel returns BAD_SHAPES and leaves
    every array as it was (outputs hold a sentinel)."""

    def call(bad=None, axis=0):
        vals = [
            np.ascontiguousarray(np.delete(v, -1, axis))
            if k == bad
            else v.copy()
            if isinstance(v, np.ndarray)
            else v
            for k, v in args.items()
        ]
        arrays = [v for v in vals if isinstance(v, np.ndarray)]
        before = [a.copy() for a in arrays]
        return getattr(module, kernel)(*vals), before, arrays

    assert call()[0] == 0
    for name, value in args.items():
        for axis in range(np.ndim(value)):
            if (name, axis) in skip or value.shape[axis] == 0:
                continue
            status, before, after = call(name, axis)
            assert status == BAD_SHAPES, (kernel, name, axis)
            for b, a in zip(before, after):
                np.testing.assert_array_equal(a, b, err_msg=f"{kernel}: {name} {axis}")


def status_with_short(module, kernel, args, name, axis):
    """The status of the call ``args`` with ``name`` one entry shorter along ``axis``, after
    checking that no array was modified."""
    vals = {
        k: np.ascontiguousarray(np.delete(v, -1, axis))
        if k == name
        else v.copy()
        if isinstance(v, np.ndarray)
        else v
        for k, v in args.items()
    }
    before = {k: v.copy() for k, v in vals.items() if isinstance(v, np.ndarray)}
    status = getattr(module, kernel)(*vals.values())
    for k, b in before.items():
        np.testing.assert_array_equal(vals[k], b, err_msg=f"{kernel}: {name} {axis}")
    return status
