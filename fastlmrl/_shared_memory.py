"""The public wrappers' memory-overlap check (the kernels' status 8, ``OVERLAPPING_ARRAYS``, said
with the names of the arguments): an array a call writes in place must not share memory with an
argument it reads, or a write could change a value after its check."""

from __future__ import annotations

import numpy as np


def refuse_shared_memory(written: dict, inputs: dict) -> None:
    """ValueError naming the first input (or other written array) that shares memory with an array
    of ``written`` ({name: array}); O(1) per pair (address ranges, ``numpy.may_share_memory``).
    Entries that are None or empty are skipped."""
    items = [(name, x) for name, x in written.items() if x is not None and x.size]
    others = [(name, x) for name, x in inputs.items() if x is not None and x.size]
    for k, (wname, w) in enumerate(items):
        for name, x in items[k + 1 :] + others:
            if np.may_share_memory(w, x):
                raise ValueError(
                    f"{name} shares memory with {wname}, which this call writes in "
                    f"place; pass a copy of {name}"
                )
