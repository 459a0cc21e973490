"""Gathering a sweep's results: ``trials.csv``, ``results.csv``/``results.jsonl`` (one row per
configuration: n, mean and 95% Student t interval of each statistic), ``best.json`` and the
learning-curve plot (mean ± 95% CI across seeds per iteration)."""

from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, TextIO

from .. import _validation as check
from .statistics import NON_NEGATIVE_METRICS, mean_ci
from .trials import Trial, config_label, load_result, read_jsonl

__all__ = ["RESULT_COLUMNS", "STATS", "TRIAL_COLUMNS", "aggregate"]


TRIAL_COLUMNS = [
    "trial_id",
    "config_id",
    "algorithm",
    "env",
    "params",
    "seed",
    "steps",
    "status",
    "attempts",
    "resumed_from",
    "iterations",
    "reward_metric",
    "final_reward",
    "final_kl",
    "tokens",
    "train_seconds",
    "tokens_per_second",
    "attempt_seconds",
    "threads",
    "host",
    "error",
]
STATS = ("final_reward", "final_kl", "tokens_per_second")
RESULT_COLUMNS = (
    ["config_id", "label", "algorithm", "env", "params", "steps", "n", "n_failed", "seeds"]
    + [f"{s}_{k}" for s in STATS for k in ("mean", "ci_low", "ci_high", "ci95", "std")]
    + ["best"]
)


def _lower_bound(stat: str, members: list[dict[str, Any]]) -> float | None:
    """0 for a statistic that cannot be negative (its interval is cut there), else None."""
    if stat == "final_reward":
        metrics = {m.get("reward_metric") for m in members}
        return 0.0 if metrics and metrics <= NON_NEGATIVE_METRICS else None
    return 0.0  # final_kl (the exact KL to the reference), tokens_per_second


def _csv_text(rows: list[dict[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: (
                    json.dumps(v, sort_keys=True)
                    if isinstance(v, (dict, list))
                    else ("" if v is None else v)
                )
                for k, v in row.items()
            }
        )
    return buffer.getvalue()


@check.renamed(deprecated={"log": "progress"})
def aggregate(
    out: str, trials: list[Trial] | None = None, plot: bool = True, progress: TextIO | None = None
) -> dict[str, Any]:
    """Read every ``result.json`` under ``out/trials`` (or of ``trials``) and write
    ``trials.csv``, ``results.csv``, ``results.jsonl``, ``best.json`` and (with matplotlib)
    ``learning_curves.png``.  Returns {"trials", "results", "best", "plot"}.  ``progress``: a text
    stream for notes (default stdout; ``log`` is its deprecated name)."""
    log = progress
    from .._atomic import atomic_write_text

    trials_dir = os.path.join(out, "trials")
    if trials is None:
        ids = sorted(os.listdir(trials_dir)) if os.path.isdir(trials_dir) else []
    else:
        ids = [t.trial_id for t in trials]
    rows = []
    for tid in ids:
        result = load_result(os.path.join(trials_dir, tid))
        if result is not None:
            rows.append(result)
    groups: dict = {}
    for row in rows:
        groups.setdefault(row["config_id"], []).append(row)
    results = []
    for config_id, members in groups.items():
        done = [m for m in members if m["status"] == "finished"]
        first = members[0]
        entry = {
            "config_id": config_id,
            "label": config_label(first["algorithm"], first["env"], first["params"]),
            "algorithm": first["algorithm"],
            "env": first["env"],
            "params": first["params"],
            "steps": first["steps"],
            "task": first["task"],
            "n": len(done),
            "n_failed": len(members) - len(done),
            "seeds": sorted(m["seed"] for m in done),
        }
        for stat in STATS:
            ci = mean_ci([m.get(stat) for m in done], lower_bound=_lower_bound(stat, done))
            for k in ("mean", "ci_low", "ci_high", "ci95", "std"):
                entry[f"{stat}_{k}"] = ci[k]
        entry["best"] = False
        results.append(entry)
    results.sort(key=lambda r: (r["env"], r["algorithm"], r["label"]))
    best: dict[str, dict[str, Any]] = {}
    for entry in results:
        m = entry["final_reward_mean"]
        if m is None:
            continue
        cur = best.get(entry["env"])
        if cur is None or m > cur["final_reward_mean"]:
            best[entry["env"]] = entry
    for entry in best.values():
        entry["best"] = True
    os.makedirs(out, exist_ok=True)
    atomic_write_text(os.path.join(out, "trials.csv"), _csv_text(rows, TRIAL_COLUMNS))
    atomic_write_text(os.path.join(out, "results.csv"), _csv_text(results, RESULT_COLUMNS))
    atomic_write_text(
        os.path.join(out, "results.jsonl"),
        "".join(json.dumps(r, sort_keys=True) + "\n" for r in results),
    )
    atomic_write_text(
        os.path.join(out, "best.json"), json.dumps(best, indent=1, sort_keys=True) + "\n"
    )
    plot_path = _plot_curves(out, rows, log) if plot else None
    return {"trials": rows, "results": results, "best": best, "plot": plot_path}


def _plot_curves(out: str, rows: list[dict[str, Any]], log: TextIO | None = None) -> str | None:
    """Mean ± 95% CI band across seeds per iteration, one panel per environment."""
    finished = [r for r in rows if r["status"] == "finished"]
    if not finished:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if log is not None:
            print(
                "(matplotlib is not installed: no learning-curve plot; pip install "
                "'fastlmrl[plot]')",
                file=log,
            )
        return None
    curves: dict = {}
    for r in finished:
        history = read_jsonl(os.path.join(out, "trials", r["trial_id"], "metrics.jsonl"))
        values = [m.get(r["reward_metric"]) for m in history]
        if values and all(v is not None for v in values):
            curves.setdefault((r["env"], r["config_id"]), (r, []))[1].append(values)
    envs = sorted({env for env, _ in curves})
    if not envs:
        return None
    fig, axes = plt.subplots(1, len(envs), figsize=(5.5 * len(envs), 3.8), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for (e, _), (r, series) in sorted(
            curves.items(),
            key=lambda kv: config_label(kv[1][0]["algorithm"], kv[1][0]["env"], kv[1][0]["params"]),
        ):
            if e != env:
                continue
            length = min(len(s) for s in series)
            floor = 0.0 if r["reward_metric"] in NON_NEGATIVE_METRICS else None
            stats = [mean_ci([s[i] for s in series], lower_bound=floor) for i in range(length)]
            x = list(range(length))
            mean = [s["mean"] for s in stats]
            label = config_label(r["algorithm"], env, r["params"])
            (line,) = ax.plot(x, mean, lw=1.2, label=f"{label} (n={len(series)})")
            if len(series) > 1:
                ax.fill_between(
                    x,
                    [s["ci_low"] for s in stats],
                    [s["ci_high"] for s in stats],
                    color=line.get_color(),
                    alpha=0.2,
                    lw=0,
                )
        metric = "task reward per sequence" if env == "text" else "return per episode"
        ax.set(xlabel="iteration", ylabel=metric, title=f"{env}: mean ± 95% CI over seeds")
        ax.legend(fontsize=6)
    fig.tight_layout()
    path = os.path.join(out, "learning_curves.png")
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def fmt(v: float | None, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}g}"


def fmt_ci(row: dict[str, Any], stat: str) -> str:
    mean, half = row.get(f"{stat}_mean"), row.get(f"{stat}_ci95")
    if mean is None:
        return "-"
    return f"{mean:.4g}" + (f" ± {half:.3g}" if half is not None else "")
