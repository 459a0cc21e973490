"""Contract cases of the tabular_losses kernels (tests/test_contract.py): valid calls and one
breakage per declared status.

N = 4 tokens over S = 4 contexts of a (4, 3) table, so that the written work arrays ``index``
(S,) and ``rows`` (min(N, S),) are as long as ``contexts``: an overlap case aliases them without
an inconsistent shape.  Per-token arrays and outputs are float64 whatever the table's dtype.
"""

import numpy as np

from ._common import LOSS_OUTPUTS, LOSS_SCALARS, bad_token_inputs, changed, sharing, shortened

N, S, V = 4, 4, 3
STATS = {
    "ppo_loss_tabular": 7,
    "reinforce_loss_tabular": 1,
    "kl_penalty_loss_tabular": 1,
    "a2c_loss_tabular": 4,
}
PER_TOKEN = (
    "returns",
    "baselines",
    "old_log_probs",
    "advantages",
    "ref_log_probs",
    "values",
    "old_values",
)


def valid_args(kernel, dtype):
    rng = np.random.default_rng(11)
    args = {}
    for name in kernel.arg_names:
        if name == "table":
            args[name] = rng.standard_normal((S, V)).astype(dtype)
        elif name == "contexts":
            args[name] = np.array([2, 0, 2, 3], np.int64)
        elif name == "tokens":
            args[name] = np.array([1, 2, 0, 1], np.int64)
        elif name in PER_TOKEN:
            args[name] = rng.standard_normal(N) - (2.0 if "log_probs" in name else 0.0)
        elif name == "weights":
            args[name] = np.full(N, 1.0 / N)
        elif name == "sequence_offsets":
            args[name] = np.array([0, 2, N], np.int64)
        elif name in LOSS_SCALARS:
            args[name] = LOSS_SCALARS[name]
        elif name in ("index", "rows", "num_rows"):
            args[name] = np.full(S if name == "index" else N if name == "rows" else 1, -7, np.int64)
        elif name in LOSS_OUTPUTS:
            args[name] = np.full(N, -7.0)
        elif name == "grad":
            args[name] = np.full((min(N, S), V), -7.0, dtype)
        elif name == "stats":
            args[name] = np.full(STATS[kernel.name], -7.0)
        else:
            raise AssertionError(f"no valid value for {kernel.name}.{name}")
    return args


def breakages(kernel, args):
    table, contexts = args["table"], args["contexts"]
    for arg in kernel.args:
        if arg.status is None:
            continue
        name, value = arg.name, args[arg.name]
        if name == "table":
            nan_row = table.copy()
            nan_row[contexts[0], 1] = np.nan
            yield "a visited row holds NaN", changed(args, table=nan_row), arg.status
            no_finite = table.copy()
            no_finite[contexts[-1]] = -np.inf
            yield "a visited row is all -inf", changed(args, table=no_finite), arg.status
            plus_inf = table.copy()
            plus_inf[contexts[1], 0] = np.inf
            yield "a visited row holds +inf", changed(args, table=plus_inf), arg.status
        elif name in ("contexts", "tokens"):
            ids = value.copy()
            ids[-1] = table.shape[0 if name == "contexts" else 1]
            yield f"{name} out of range", changed(args, **{name: ids}), arg.status
            if name == "tokens":
                masked = table.copy()
                masked[contexts[2], args["tokens"][2]] = -np.inf
                yield "a token selects a -inf logit", changed(args, table=masked), arg.status
        elif name == "sequence_offsets":
            offsets = np.array([0, 2, N + 1], np.int64)
            yield "offsets past N", changed(args, sequence_offsets=offsets), arg.status
        else:  # a float64 per-token input
            yield from bad_token_inputs(args, name, arg.status)
    arrays = [a.name for a in kernel.args if a.kind.is_array and a.name != "table"]
    for name in arrays:
        if name == "sequence_offsets":  # any length (the offsets' own check)
            continue
        yield f"{name} short", shortened(args, name), kernel.statuses[0]
    overlap = kernel.statuses[1]
    yield "contexts is index", sharing(args, "contexts", "index"), overlap
    if "weights" in args:
        yield "weights is token_loss", sharing(args, "weights", "token_loss"), overlap
    yield "tokens is rows", sharing(args, "tokens", "rows"), overlap
