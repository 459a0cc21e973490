"""`fastlmrl sweep` on Ray: grid validation, a local sweep end to end, retries of failing and dying
trials, a sweep killed midway and restarted, the statistics (Student t quantiles, 95% CIs)."""

import importlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
import sweep_faults  # tests/sweep_faults.py: fault-injecting trial callbacks (test code only)

from fastlmrl import cli

# the package (fastlmrl.sweep also names the function: fastlmrl/__init__.py exports it)
sw = importlib.import_module("fastlmrl.sweep")

STEPS = 6
GRID = {
    "algorithms": ["q_learning", "grpo"],
    "seeds": 2,
    "steps": STEPS,
    "checkpoint_every": 2,
    "max_retries": 2,
    "backend": "cython",  # no JIT compilation in each fresh Ray worker: fast tests
    "task": {"max_new_tokens": 8, "num_envs": 16},
    "params": {"alpha": [0.1, 0.5], "num_prompts": [2], "group_size": [2]},
}
# q_learning/toy × alpha {0.1, 0.5} × seeds {0, 1} + grpo/text × seeds {0, 1}
N_TRIALS, N_CONFIGS = 6, 3


@pytest.fixture(scope="module")
def ray_session():
    """One local Ray instance (2 CPUs) for the module: starting Ray costs ~6 s."""
    import ray  # the test extra installs it: CI must run the sweep tests, never skip them

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def _trial_files(out):
    return sorted((out / "trials").iterdir())


def _attempts(folder):
    path = folder / "attempts.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()] if path.exists() else []


def _iterations(folder):
    return [json.loads(l)["iteration"] for l in (folder / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------------------------
# statistics (no Ray)


@pytest.mark.parametrize(
    "df, expected",
    [
        # two-sided 95% critical values t(0.975, df) from the standard tables
        (1, 12.706),
        (2, 4.303),
        (3, 3.182),
        (4, 2.776),
        (5, 2.571),
        (9, 2.262),
        (10, 2.228),
        (20, 2.086),
        (30, 2.042),
        (60, 2.000),
        (120, 1.980),
        (10**6, 1.960),
    ],
)
def test_student_t_quantiles_match_the_table(df, expected):
    assert sw.student_t_ppf(0.975, df) == pytest.approx(expected, abs=6e-4)
    assert sw.student_t_ppf(0.025, df) == pytest.approx(-expected, abs=6e-4)


def test_student_t_other_levels_and_errors():
    assert sw.student_t_ppf(0.5, 3) == 0.0
    assert sw.student_t_ppf(0.95, 1) == pytest.approx(6.314, abs=1e-3)  # tan(pi * 0.45)
    assert sw.student_t_ppf(0.95, 1) == pytest.approx(math.tan(math.pi * 0.45), rel=1e-9)
    assert sw.student_t_ppf(0.995, 5) == pytest.approx(4.032, abs=1e-3)
    # df = 2 has a closed form: t = (2p - 1) / sqrt(2 p (1 - p))
    p = 0.9
    assert sw.student_t_ppf(p, 2) == pytest.approx(
        (2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-9
    )
    for bad in (0.0, 1.0, -1, 2):
        with pytest.raises(ValueError, match="p must"):
            sw.student_t_ppf(bad, 3)
    with pytest.raises(ValueError, match="df must"):
        sw.student_t_ppf(0.9, 0)


def test_student_t_comes_from_scipy():
    from scipy import stats

    for p, df in ((0.975, 3), (0.9, 7.5), (0.01, 2)):
        assert sw.student_t_ppf(p, df) == float(stats.t.ppf(p, df))


def test_missing_scipy_names_the_extra(monkeypatch, tmp_path):
    """Without SciPy: an error naming the extra and the command, never a normal approximation."""
    monkeypatch.setitem(sys.modules, "scipy", None)
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    message = r"pip install 'fastlmrl\[distributed\]'"
    with pytest.raises(RuntimeError, match=message):
        sw.student_t_ppf(0.975, 3)
    with pytest.raises(RuntimeError, match=message):
        sw.mean_ci([1.0, 2.0])
    assert sw.mean_ci([1.0])["mean"] == 1.0  # no interval, no SciPy needed
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=message):
        sw.sweep(GRID, out=str(out), progress=False)
    assert not out.exists()  # refused before anything is written


def test_mean_ci_lower_bound_cuts_the_interval_at_zero():
    values = [0.0, 0.0, 0.1]
    raw, cut = sw.mean_ci(values), sw.mean_ci(values, lower_bound=0.0)
    assert raw["ci_low"] < 0 and cut["ci_low"] == 0.0
    assert cut["ci_high"] == raw["ci_high"] and cut["ci95"] == raw["ci95"]
    high = sw.mean_ci([5.0, 6.0, 7.0], lower_bound=0.0)  # far from 0: unchanged
    assert high["ci_low"] == sw.mean_ci([5.0, 6.0, 7.0])["ci_low"] > 0
    with pytest.raises(ValueError, match="confidence"):
        sw.mean_ci(values, confidence=1.0)


def _fake_trial(out, trial_id, config_id, env, metric, finals, curve, seed):
    folder = out / "trials" / trial_id
    folder.mkdir(parents=True)
    result = {
        "trial_id": trial_id,
        "config_id": config_id,
        "algorithm": "a",
        "env": env,
        "params": {},
        "seed": seed,
        "steps": len(curve),
        "task": {},
        "status": "finished",
        "reward_metric": metric,
        **finals,
    }
    (folder / "result.json").write_text(json.dumps(result))
    (folder / "metrics.jsonl").write_text("".join(json.dumps({metric: v}) + "\n" for v in curve))


def test_aggregate_and_plot_cut_non_negative_quantities_at_zero(tmp_path, monkeypatch):
    """tokens/s, KL and the text score cannot be negative: their interval (results) and band
    (plot) stop at 0; a toy return can, and keeps its interval."""
    out = tmp_path / "sweep"
    text = [0.0, 0.0, 0.3]
    for seed, (score, tps) in enumerate(((0.0, 0.0), (0.0, 1.0), (0.3, 50.0))):
        _fake_trial(
            out,
            f"t{seed}",
            "text",
            "text",
            "score",
            {"final_reward": score, "final_kl": score, "tokens_per_second": tps},
            [text[seed]] * 3,
            seed,
        )
        _fake_trial(
            out,
            f"y{seed}",
            "toy",
            "toy",
            "reward",
            {"final_reward": score, "final_kl": None, "tokens_per_second": tps},
            [text[seed]] * 3,
            seed,
        )
    bands = []
    try:
        import matplotlib.axes
    except ImportError:
        matplotlib = None
    else:
        original = matplotlib.axes.Axes.fill_between

        def spy(self, x, low, high, **kw):
            bands.append((self, list(low)))  # the panel's title is set afterwards
            return original(self, x, low, high, **kw)

        monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    gathered = sw.aggregate(str(out), plot=matplotlib is not None, progress=io.StringIO())
    rows = {r["config_id"]: r for r in gathered["results"]}
    raw = sw.mean_ci([0.0, 0.0, 0.3])
    assert raw["ci_low"] < 0
    assert rows["text"]["final_reward_ci_low"] == 0.0 and rows["text"]["final_kl_ci_low"] == 0.0
    assert rows["text"]["tokens_per_second_ci_low"] == 0.0
    assert rows["toy"]["final_reward_ci_low"] == pytest.approx(raw["ci_low"])  # may be negative
    assert rows["text"]["final_reward_ci_high"] == pytest.approx(raw["ci_high"])
    if matplotlib is not None:
        by_env = {ax.get_title().split(":")[0]: low for ax, low in bands}
        assert set(by_env) == {"text", "toy"}
        assert min(by_env["text"]) == 0.0 and min(by_env["toy"]) < 0


def test_mean_ci_against_numpy():
    values = [0.3, 0.7, 0.4, 0.9, 0.55]
    ci = sw.mean_ci(values)
    x = np.array(values)
    half = 2.776 * x.std(ddof=1) / math.sqrt(len(x))  # t(0.975, 4) from the table
    assert ci["n"] == 5 and ci["mean"] == pytest.approx(x.mean())
    assert ci["std"] == pytest.approx(x.std(ddof=1))
    assert ci["ci95"] == pytest.approx(half, rel=2e-4)
    assert ci["ci_low"] == pytest.approx(x.mean() - half, rel=2e-4)
    one = sw.mean_ci([2.0, None])
    assert one["n"] == 1 and one["mean"] == 2.0 and one["ci95"] is None
    assert sw.mean_ci([])["mean"] is None


def test_summarize_history_by_hand():
    history = [
        {"score": float(i), "kl": 10.0 + i, "tokens": 100, "seconds": 0.5} for i in range(20)
    ]
    s = sw.summarize_history(history)
    # last 10% of 20 iterations = the last 2: scores 18, 19; KLs 28, 29
    assert s["final_reward"] == 18.5 and s["final_kl"] == 28.5 and s["reward_metric"] == "score"
    assert s["tokens"] == 2000 and s["train_seconds"] == 10.0 and s["tokens_per_second"] == 200.0
    value = sw.summarize_history(
        [{"reward": 1.0, "tokens": 4, "seconds": 1.0}, {"reward": 3.0, "tokens": 4, "seconds": 1.0}]
    )
    assert value["final_reward"] == 3.0 and value["final_kl"] is None  # ceil(0.2) = 1 iteration
    assert sw.summarize_history([])["final_reward"] is None


# ---------------------------------------------------------------------------------------------
# the grid (no Ray)


def test_grid_expansion_restricts_params_to_each_algorithm():
    trials = sw.expand_trials(GRID)
    assert len(trials) == N_TRIALS and len({t.trial_id for t in trials}) == N_TRIALS
    assert len({t.config_id for t in trials}) == N_CONFIGS
    q = [t for t in trials if t.algorithm == "q_learning"]
    g = [t for t in trials if t.algorithm == "grpo"]
    assert {(t.env, t.params["alpha"], t.seed) for t in q} == {
        ("toy", a, s) for a in (0.1, 0.5) for s in (0, 1)
    }
    assert all(t.params == {"group_size": 2, "num_prompts": 2} and t.env == "text" for t in g)
    # ids are stable: a restarted sweep recognises its trials
    assert [t.trial_id for t in sw.expand_trials(dict(GRID))] == [t.trial_id for t in trials]
    assert sw.expand_trials(dict(GRID, steps=7))[0].trial_id != trials[0].trial_id
    # an explicit env list: q_learning runs on both, grpo only on text
    both = sw.expand_trials(dict(GRID, envs=["text", "toy"]))
    assert {(t.algorithm, t.env) for t in both} == {
        ("q_learning", "toy"),
        ("q_learning", "text"),
        ("grpo", "text"),
    }
    # floats given as ints are coerced; seeds as a list
    one = sw.expand_trials({"algorithms": ["ppo"], "seeds": [3, 7], "params": {"lr": [1]}})
    assert [t.seed for t in one] == [3, 7] and one[0].params == {"lr": 1.0}


def test_trials_are_built_from_typed_values(tmp_path, capsys, monkeypatch):
    """A trial's params reach the config as they are (no KEY=VALUE strings parsed on the way),
    its checkpoint records them, and `fastlmrl sample` rebuilds the trial's run from it."""
    import fastlmrl.runs

    def no_strings(*args, **kwargs):
        raise AssertionError("a sweep must not go through the --set string parser")

    monkeypatch.setattr(fastlmrl.runs, "parse_overrides", no_strings)
    trial = next(
        t
        for t in sw.expand_trials(dict(GRID, steps=2))
        if t.algorithm == "q_learning" and t.params == {"alpha": 0.5}
    )
    trainer = sw.trials.build_trainer(trial.spec())
    assert trainer.config.alpha == 0.5 and type(trainer.config.alpha) is float
    assert (
        trainer.task_spec["params"] == {"alpha": 0.5} and trainer.task_spec["algo"] == "q_learning"
    )
    folder = tmp_path / "trial"
    result = sw.run_trial(trial.spec(), str(folder), checkpoint_every=1)
    assert result["status"] == "finished" and result["iterations"] == 2
    capsys.readouterr()
    assert cli.main(["sample", str(folder), "--num", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_toml_and_yaml_files(tmp_path, monkeypatch):
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'algorithms = ["q_learning", "grpo"]\nseeds = 2\nsteps = 6\n'
        'checkpoint_every = 2\nmax_retries = 2\nbackend = "cython"\n'
        "[task]\nmax_new_tokens = 8\nnum_envs = 16\n"
        "[params]\nalpha = [0.1, 0.5]\nnum_prompts = [2]\ngroup_size = [2]\n"
    )
    ids = [t.trial_id for t in sw.expand_trials(GRID)]
    assert [t.trial_id for t in sw.expand_trials(str(toml))] == ids
    cfg = sw.load_config(toml)
    assert cfg.source == str(toml) and cfg.max_retries == 2
    yml = tmp_path / "grid.yaml"
    yml.write_text(
        "algorithms: [q_learning, grpo]\nseeds: 2\nsteps: 6\ncheckpoint_every: 2\n"
        "backend: cython\n"
        "task: {max_new_tokens: 8, num_envs: 16}\n"
        "params: {alpha: [0.1, 0.5], num_prompts: [2], group_size: [2]}\n"
    )
    try:
        import yaml  # noqa: F401
    except ImportError:
        pass
    else:
        assert [t.trial_id for t in sw.expand_trials(str(yml))] == ids
    monkeypatch.setitem(sys.modules, "yaml", None)  # as if PyYAML were not installed
    with pytest.raises(RuntimeError, match="PyYAML"):
        sw.load_config(str(yml))


def test_example_config_is_valid():
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "sweep.toml")
    trials = sw.expand_trials(example)
    assert len(trials) == 24
    sw.check_buildable(trials)


@pytest.mark.parametrize(
    "change, error, message",
    [
        ({"bogus": 1}, ValueError, "unknown key"),
        ({"algorithms": ["dqn"]}, ValueError, "unknown algorithm 'dqn'"),
        ({"algorithms": []}, ValueError, "'algorithms' is empty"),
        ({"algorithms": "q_learning", "params": {}}, None, None),  # a single name is fine
        ({"algorithms": [1]}, TypeError, "is not a name"),
        ({"envs": ["atari"]}, ValueError, "unknown env 'atari'"),
        ({"envs": ["toy"]}, ValueError, "needs env 'text'"),
        ({"seeds": []}, ValueError, "'seeds' is empty"),
        ({"seeds": 0}, ValueError, "must be >= 1"),
        ({"seeds": [1.5]}, TypeError, "not a non-negative int"),
        ({"seeds": [1, 1]}, ValueError, "a seed twice"),
        ({"seeds": "3"}, TypeError, "'seeds' must be"),
        ({"steps": "10"}, TypeError, "'steps' must be an int"),
        ({"steps": 0}, ValueError, "'steps' must be >= 1"),
        ({"checkpoint_every": -1}, ValueError, "'checkpoint_every' must be >= 0"),
        ({"max_retries": 1.0}, TypeError, "'max_retries' must be an int"),
        ({"workers": 0}, ValueError, "'workers' must be >= 1"),
        ({"backend": "fortran"}, ValueError, "unknown backend"),
        ({"params": {"nonsense": [1]}}, ValueError, "has a hyper-parameter 'nonsense'"),
        ({"params": {"alpha": []}}, ValueError, "'params.alpha' is an empty list"),
        ({"params": {"alpha": ["a"]}}, TypeError, "expected a number"),
        ({"params": {"alpha": [True]}}, TypeError, "expected a number"),
        ({"params": {"num_prompts": [2.5]}}, TypeError, "expected an int"),
        ({"params": {"alpha": [0.1, 0.1]}}, ValueError, "a value twice"),
        ({"params": {"alpha": [float("nan")]}}, ValueError, "not finite"),
        ({"params": [1]}, TypeError, "'params' must be a table"),
        ({"task": {"order": 0}}, ValueError, "'order' must be >= 1"),
        ({"task": {"colour": 1}}, ValueError, "unknown key"),
        ({"task": {"corpus": "/nonexistent/corpus.txt"}}, ValueError, "does not exist"),
        ({"params": {"alpha": [0.1, -1.0]}}, ValueError, "cannot be built.*alpha"),
        ({"params": {"exploration": ["bogus"]}}, ValueError, "cannot be built.*exploration"),
    ],
)
def test_bad_configs_fail_before_ray_starts(tmp_path, change, error, message):
    grid = dict(GRID, **change)
    out = tmp_path / "out"
    if error is None:
        sw.expand_trials(grid)
        return
    with pytest.raises(error, match=message):
        sw.sweep(grid, out=str(out), log=False)
    assert not out.exists()  # nothing written, Ray never started


def test_bad_config_arguments_and_files(tmp_path, capsys, monkeypatch):
    with pytest.raises(TypeError, match="config must be"):
        sw.load_config(3)
    with pytest.raises(ValueError, match="does not exist"):
        sw.load_config(str(tmp_path / "missing.toml"))
    (tmp_path / "grid.json").write_text("{}")
    with pytest.raises(ValueError, match="expected a .toml"):
        sw.load_config(str(tmp_path / "grid.json"))
    (tmp_path / "broken.toml").write_text("algorithms = [")
    with pytest.raises(ValueError, match="invalid TOML"):
        sw.load_config(str(tmp_path / "broken.toml"))
    with pytest.raises(ValueError, match="workers must be"):
        sw.sweep(GRID, out=str(tmp_path / "o"), workers=0, log=False)
    for bad, message in (
        (print, "got one builtin_function_or_method"),
        (3, "got int"),
        ([print, "x"], r"trial_callbacks\[1\] is not callable"),
    ):
        with pytest.raises(TypeError, match=message):
            sw.sweep(GRID, out=str(tmp_path / "o"), trial_callbacks=bad, log=False)
    assert not (tmp_path / "o").exists()
    # the command reports a bad grid cleanly (exit status 2), with no deprecated keyword inside
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert cli.main(["sweep", str(tmp_path / "broken.toml"), "--out", str(tmp_path / "o")]) == 2
    assert "invalid TOML" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["sweep", str(tmp_path / "broken.toml"), "--workers", "0"])


# ---------------------------------------------------------------------------------------------
# on Ray


def test_local_sweep_end_to_end(ray_session, tmp_path):
    out = tmp_path / "sweep"
    log = io.StringIO()
    result = sw.sweep(GRID, out=str(out), workers=2, log=log)
    text = log.getvalue()
    assert result.ran == N_TRIALS and result.skipped == 0 and not result.failed
    assert result.threads_per_trial == 1 and result.workers == 2  # 2 cores // 2 workers
    assert "2 workers, 1 Numba/Cython thread(s) per trial" in text
    folders = _trial_files(out)
    assert len(folders) == N_TRIALS
    finals = {}
    for folder in folders:
        res = json.loads((folder / "result.json").read_text())
        spec = json.loads((folder / "spec.json").read_text())
        assert res["status"] == "finished" and res["trial_id"] == spec["trial_id"] == folder.name
        assert res["attempts"] == 1 and res["threads"] == 1 and res["iterations"] == STEPS
        assert (folder / "checkpoint.ckpt").exists()
        history = [json.loads(l) for l in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [m["iteration"] for m in history] == list(range(STEPS))
        key = "score" if spec["env"] == "text" else "reward"
        assert res["final_reward"] == history[-1][key]  # ceil(10% of 6) = the last iteration
        finals[spec["trial_id"]] = (spec["config_id"], res["final_reward"])
    # one aggregated row per configuration, with an independently computed 95% CI (n = 2)
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == N_CONFIGS
    for row in rows:
        x = np.array([v for c, v in finals.values() if c == row["config_id"]])
        assert row["n"] == 2 and row["n_failed"] == 0 and row["seeds"] == [0, 1]
        assert row["final_reward_mean"] == pytest.approx(x.mean())
        half = 12.706 * x.std(ddof=1) / math.sqrt(2)  # t(0.975, 1)
        assert row["final_reward_ci95"] == pytest.approx(half, rel=1e-4, abs=1e-12)
        assert row["tokens_per_second_mean"] > 0
        assert (row["final_kl_mean"] is None) == (row["env"] == "toy")
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 1 + N_CONFIGS and "final_reward_ci_low" in csv_lines[0]
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + N_TRIALS
    best = json.loads((out / "best.json").read_text())
    assert set(best) == {"text", "toy"}
    toy = [r for r in rows if r["env"] == "toy"]
    assert best["toy"]["final_reward_mean"] == max(r["final_reward_mean"] for r in toy)
    assert f"best on toy: {best['toy']['label']}" in text
    assert result.best["toy"]["config_id"] == best["toy"]["config_id"]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.plot is None
    else:
        assert (out / "learning_curves.png").stat().st_size > 1000
    # the same trial run in-process gives the same numbers (timings aside)
    spec = json.loads((folders[0] / "spec.json").read_text())
    again = sw.run_trial(spec, str(tmp_path / "in_process"), checkpoint_every=2)
    assert (
        again["final_reward"]
        == json.loads((folders[0] / "result.json").read_text())["final_reward"]
    )
    # a second call finds everything done: nothing runs again
    mtimes = {f.name: (f / "result.json").stat().st_mtime_ns for f in folders}
    again = sw.sweep(GRID, out=str(out), workers=2, log=False)
    assert again.ran == 0 and again.skipped == N_TRIALS and len(again.trials) == N_TRIALS
    assert {f.name: (f / "result.json").stat().st_mtime_ns for f in folders} == mtimes
    assert all(len(_attempts(f)) == 1 for f in folders)


def test_failing_and_dying_trials_are_retried_then_reported(ray_session, tmp_path, monkeypatch):
    out = tmp_path / "sweep"
    trials = {(t.algorithm, t.params.get("alpha"), t.seed): t for t in sw.expand_trials(GRID)}
    raise_once = trials[("q_learning", 0.1, 0)].trial_id
    exit_once = trials[("q_learning", 0.5, 1)].trial_id
    faults = sweep_faults.faults(
        "grpo:1=raise@3", f"{raise_once}=raise-once@3", f"{exit_once}=exit-once@2"
    )
    log = io.StringIO()
    result = sw.sweep(GRID, out=str(out), workers=2, log=log, trial_callbacks=faults)
    assert result.ran == N_TRIALS and len(result.trials) == N_TRIALS
    assert len(result.failed) == 1
    failed = result.failed[0]
    grpo1 = trials[("grpo", None, 1)].trial_id
    assert failed["trial_id"] == grpo1 and failed["status"] == "failed"
    assert failed["attempts"] == 1 + GRID["max_retries"]  # tried, then retried max_retries times
    assert "RuntimeError: injected fault" in failed["error"]
    # the worker's traceback: through the trial runner into the callback
    assert "sweep/trials.py" in failed["traceback"] and "sweep_faults.py" in failed["traceback"]
    assert f"FAILED {grpo1}" in log.getvalue() and "injected fault" in log.getvalue()
    attempts = _attempts(out / "trials" / grpo1)
    assert [a["start_iteration"] for a in attempts] == [0, 3, 3]  # each retry resumed at 3
    assert "failed" in (out / "trials.csv").read_text()
    grpo_row = [r for r in result.results if r["algorithm"] == "grpo"][0]
    assert (
        grpo_row["n"] == 1 and grpo_row["n_failed"] == 1 and grpo_row["final_reward_ci95"] is None
    )
    # the raise-once and exit-once trials succeeded on their second attempt, from a checkpoint,
    # with every iteration exactly once and the same result as an uninterrupted run
    for tid, at in ((raise_once, 3), (exit_once, 2)):
        folder = out / "trials" / tid
        res = json.loads((folder / "result.json").read_text())
        assert res["status"] == "finished" and res["attempts"] == 2 and res["resumed_from"] == at
        assert [a["start_iteration"] for a in _attempts(folder)] == [0, at]
        assert _iterations(folder) == list(range(STEPS))
        clean = sw.run_trial(
            json.loads((folder / "spec.json").read_text()),
            str(tmp_path / f"clean-{tid}"),
            checkpoint_every=2,
        )
        ours = [
            json.loads(l)["reward"] for l in (folder / "metrics.jsonl").read_text().splitlines()
        ]
        theirs = [
            json.loads(l)["reward"]
            for l in (tmp_path / f"clean-{tid}" / "metrics.jsonl").read_text().splitlines()
        ]
        assert ours == theirs and res["final_reward"] == clean["final_reward"]
    # failed trials stay failed on a restart, unless retry_failed: then it resumes and finishes
    again = sw.sweep(GRID, out=str(out), workers=2, log=False)
    assert again.ran == 0 and len(again.failed) == 1
    fixed = sw.sweep(GRID, out=str(out), workers=2, retry_failed=True, log=False)
    assert fixed.ran == 1 and not fixed.failed
    res = json.loads((out / "trials" / grpo1 / "result.json").read_text())
    assert res["status"] == "finished" and res["attempts"] == 4 and res["resumed_from"] == 3
    assert _iterations(out / "trials" / grpo1) == list(range(STEPS))


def test_worker_that_always_dies_is_reported(ray_session, tmp_path, monkeypatch):
    grid = dict(GRID, algorithms=["q_learning"], seeds=1, max_retries=1, params={"alpha": [0.1]})
    result = sw.sweep(
        grid,
        out=str(tmp_path / "s"),
        workers=2,
        log=False,
        trial_callbacks=sweep_faults.faults("q_learning:0=exit@1"),
    )
    assert len(result.failed) == 1 and result.failed[0]["attempts"] == 2
    assert "WorkerCrashedError" in result.failed[0]["error"]


def test_sweep_killed_midway_and_restarted(ray_session, tmp_path):
    """The driver is SIGKILLed while trials run; the restart finishes with exactly one result
    per trial, does not rerun finished trials and resumes the interrupted one."""
    out = tmp_path / "sweep"
    config = tmp_path / "grid.toml"
    config.write_text(
        'algorithms = ["q_learning", "grpo"]\nseeds = 2\nsteps = 6\n'
        'checkpoint_every = 2\nmax_retries = 2\nbackend = "cython"\n'
        "[task]\nmax_new_tokens = 8\nnum_envs = 16\n"
        "[params]\nalpha = [0.1, 0.5]\nnum_prompts = [2]\ngroup_size = [2]\n"
    )
    trials = sw.expand_trials(str(config))
    victim = trials[-1]  # grpo seed 1: submitted last, so earlier trials have finished by then
    assert (victim.algorithm, victim.seed) == ("grpo", 1)
    # the driver: tests/sweep_faults.py runs the sweep with a callback that kills it
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sweep_faults",
            str(config),
            str(out),
            "grpo:1=kill-driver-once@4",
        ],
        cwd=os.path.dirname(os.path.dirname(__file__)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=180)
    finally:
        time.sleep(0.5)
        try:  # the killed driver's Ray processes (its own process group)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode == -signal.SIGKILL, output.decode(errors="replace")[-3000:]
    done_before = {
        f.name: (f / "result.json").stat().st_mtime_ns
        for f in _trial_files(out)
        if (f / "result.json").exists()
    }
    assert 1 <= len(done_before) < N_TRIALS and victim.trial_id not in done_before
    victim_dir = out / "trials" / victim.trial_id
    assert _iterations(victim_dir) == [0, 1, 2, 3]  # its checkpoint at 4 iterations
    # restart (the command again, in this process's Ray session)
    assert cli.main(["sweep", str(config), "--out", str(out), "--workers", "2"]) == 0
    folders = _trial_files(out)
    assert len(folders) == N_TRIALS
    results = [json.loads((f / "result.json").read_text()) for f in folders]
    assert sorted(r["trial_id"] for r in results) == sorted(t.trial_id for t in trials)
    assert all(r["status"] == "finished" for r in results)
    for folder in folders:
        assert _iterations(folder) == list(range(STEPS))  # no iteration counted twice
        if folder.name in done_before:  # finished trials were not run again
            assert (folder / "result.json").stat().st_mtime_ns == done_before[folder.name]
            assert len(_attempts(folder)) == 1
    res = json.loads((victim_dir / "result.json").read_text())
    assert res["attempts"] == 2 and res["resumed_from"] == 4
    assert len((out / "trials.csv").read_text().splitlines()) == 1 + N_TRIALS
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert sum(r["n"] for r in rows) == N_TRIALS and all(r["n"] == 2 for r in rows)


def test_threads_larger_than_a_node_are_refused(ray_session, tmp_path):
    with pytest.raises(ValueError, match="largest node of the Ray cluster has 2 CPUs"):
        sw.sweep(dict(GRID, threads_per_trial=3), out=str(tmp_path / "s"), log=False)
    # 1 worker on the 2-CPU session: each trial gets both CPUs and 2 threads
    grid = dict(GRID, algorithms=["q_learning"], seeds=1, params={"alpha": [0.1]})
    result = sw.sweep(grid, out=str(tmp_path / "one"), workers=1, log=False)
    assert result.threads_per_trial == 2 and result.trials[0]["threads"] == 2
