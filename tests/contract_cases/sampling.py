"""Contract cases of fastlmrl.sampling (see README.md): (3, 4) logits, top-k 2, top-p 0.9, min-p
0.1 at temperature 0.7; three (N,) outputs (int64 tokens, two log-prob rows)."""

import numpy as np

from fastlmrl._status import Status

from ._common import changed, sharing, shortened

N, V = 3, 4


def valid_args(kernel, dtype):
    rng = np.random.default_rng(0)
    return dict(
        logits=rng.standard_normal((N, V)).astype(dtype),
        temperature=0.7,
        top_k=2,
        top_p=0.9,
        min_p=0.1,
        key=np.uint64(5),
        counter=np.uint64(11),
        tokens_out=np.full(N, -7, np.int64),
        log_probs_out=np.full(N, 7.0, dtype),
        model_log_probs_out=np.full(N, 7.0, dtype),
        num_threads=1,
    )


def breakages(kernel, args):
    bad = args["logits"].copy()
    bad[1, 2] = np.inf
    yield "logits", changed(args, logits=bad), Status.BAD_LOGITS
    for name, value, status in (
        ("temperature", float("nan"), Status.BAD_TEMPERATURE),
        ("temperature", 1e-310, Status.BAD_TEMPERATURE),  # 1 / T overflows
        ("top_k", -1, Status.BAD_TOP_K),
        ("top_p", 0.0, Status.BAD_TOP_P),
        ("min_p", 1.5, Status.BAD_MIN_P),
    ):
        yield name, changed(args, **{name: value}), status
    for name in ("tokens_out", "log_probs_out", "model_log_probs_out"):
        yield f"{name} short", shortened(args, name), Status.BAD_SHAPES
    yield (
        "model_log_probs_out is log_probs_out",
        sharing(args, "model_log_probs_out", "log_probs_out"),
        Status.OVERLAPPING_ARRAYS,
    )
    inside = args["logits"].copy()
    yield (
        "logits is log_probs_out",
        changed(args, logits=inside, log_probs_out=inside.reshape(-1)[:N]),
        Status.OVERLAPPING_ARRAYS,
    )
