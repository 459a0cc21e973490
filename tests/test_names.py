"""One name per concept: the canonical parameter names, their deprecated earlier spellings
(accepted with a DeprecationWarning naming the new one) and the ecosystem's spellings (TRL's
``beta``, ``epsilon``, ... accepted silently); two spellings of one parameter are a TypeError."""

import dataclasses
import importlib
import inspect
import io
import warnings

import numpy as np
import pytest

import fastlmrl
from fastlmrl import _validation as check
from fastlmrl.trainers.a2c import A2CConfig
from fastlmrl.trainers.grpo import GRPOConfig
from fastlmrl.trainers.ppo import PPOConfig
from fastlmrl.trainers.reinforce import ReinforceConfig
from fastlmrl.trainers.rloo import RLOOConfig

sweep_module = importlib.import_module("fastlmrl.sweep")  # (fastlmrl.sweep is the function)

# ------------------------------------------------------------------------------ the helper


@check.renamed(deprecated={"old": "new"}, ecosystem={"theirs": "new", "trl_b": "b"})
def _f(a, new=1.0, b=2.0):
    return a, new, b


def test_helper_maps_warns_and_refuses_two_spellings():
    assert _f(0, new=5) == (0, 5, 2.0)
    with pytest.warns(DeprecationWarning, match="'old' is deprecated, use 'new'"):
        assert _f(0, old=5) == (0, 5, 2.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the ecosystem's names pass silently
        assert _f(0, theirs=5, trl_b=3) == (0, 5, 3)
    for call in (
        lambda: _f(0, new=1, old=2),
        lambda: _f(0, 1, theirs=2),
        lambda: _f(0, new=1.0, theirs=2),
        lambda: _f(0, old=1, theirs=2),
    ):
        with pytest.raises(TypeError, match="got both '(new|old)' and '(old|theirs)'"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                call()
    assert str(inspect.signature(_f)) == "(a, new=1.0, b=2.0)"


def test_helper_refuses_a_target_without_the_parameter():
    with pytest.raises(AssertionError, match="no parameter 'missing'"):
        check.renamed(ecosystem={"x": "missing"})(lambda a: a)


# ------------------------------------------------------------------------------ the public API


def _kl_inputs():
    rng = np.random.default_rng(3)
    lp, ref = -rng.random((2, 4)) - 0.1, -rng.random((2, 4)) - 0.1
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], bool)
    return dict(rewards=rng.standard_normal((2, 4)), lp=lp, ref=ref, mask=mask)


def _loss_inputs():
    rng = np.random.default_rng(4)
    n, v = 6, 5
    old = -rng.random(n) - 0.5
    old[::2] -= 3.0  # ratios on both sides of the clip range
    return dict(
        logits=rng.standard_normal((n, v)),
        table=rng.standard_normal((3, v)),
        contexts=np.array([0, 1, 1, 2, 0, 2]),
        tokens=rng.integers(0, v, n),
        old=old,
        adv=rng.standard_normal(n),
        ref=-rng.random(n) - 0.5,
        offsets=np.array([0, 2, 6]),
    )


def kl_penalty(**kw):
    d = _kl_inputs()
    kw.setdefault("log_probs", d["lp"]) if "logp" not in kw else None
    kw.setdefault("ref_log_probs", d["ref"]) if "ref_logp" not in kw else None
    return fastlmrl.kl_penalty(mask=d["mask"], **kw)


def kl_penalized_rewards(**kw):
    d = _kl_inputs()
    kw.setdefault("log_probs", d["lp"]) if "logp" not in kw else None
    kw.setdefault("ref_log_probs", d["ref"]) if "ref_logp" not in kw else None
    kw.setdefault("kl_coef", 0.1) if "beta" not in kw else None
    return fastlmrl.kl_penalized_rewards(d["rewards"], mask=d["mask"], **kw)


def kl_shaped(**kw):
    d = _kl_inputs()
    kw.setdefault("log_probs", d["lp"]) if "logprobs" not in kw else None
    kw.setdefault("ref_log_probs", d["ref"]) if "ref_logprobs" not in kw else None
    kw.setdefault("kl_coef", 0.1) if "beta" not in kw else None
    return fastlmrl.rewards.kl_shaped(d["rewards"], valid=d["mask"], **kw)


def sequence_importance_ratio(**kw):
    d = _kl_inputs()
    kw.setdefault("log_probs", d["lp"]) if "logp" not in kw else None
    kw.setdefault("old_log_probs", d["ref"]) if "old_logp" not in kw else None
    return fastlmrl.sequence_importance_ratio(mask=d["mask"], **kw)


def kl_penalty_loss(**kw):
    d = _loss_inputs()
    return fastlmrl.kl_penalty_loss(d["logits"], d["tokens"], d["ref"], **kw)


def kl_penalty_loss_tabular(**kw):
    d = _loss_inputs()
    return fastlmrl.kl_penalty_loss_tabular(d["table"], d["contexts"], d["tokens"], d["ref"], **kw)


def ppo_loss(**kw):
    d = _loss_inputs()
    return fastlmrl.ppo_loss(
        d["logits"],
        d["tokens"],
        d["old"],
        d["adv"],
        sequence_offsets=d["offsets"],
        ref_log_probs=d["ref"],
        **kw,
    )


def ppo_loss_tabular(**kw):
    d = _loss_inputs()
    return fastlmrl.ppo_loss_tabular(
        d["table"],
        d["contexts"],
        d["tokens"],
        d["old"],
        d["adv"],
        sequence_offsets=d["offsets"],
        ref_log_probs=d["ref"],
        **kw,
    )


def aggregate(**kw):
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        result = sweep_module.aggregate(out, plot=False, **kw)
    return result


_D, _E = True, False  # deprecated (warns) / the ecosystem's spelling (silent)
_LP = _kl_inputs()["lp"] - 0.25
_STREAM = io.StringIO()
#: (function, other spelling, our name, a value other than the default, deprecated?)
ALIASES = [
    (kl_penalty, "logp", "log_probs", _LP, _D),
    (kl_penalty, "ref_logp", "ref_log_probs", _LP, _D),
    (kl_penalty, "estimator", "kl_estimator", "k2", _D),
    (kl_penalized_rewards, "logp", "log_probs", _LP, _D),
    (kl_penalized_rewards, "ref_logp", "ref_log_probs", _LP, _D),
    (kl_penalized_rewards, "estimator", "kl_estimator", "k3", _D),
    (kl_penalized_rewards, "beta", "kl_coef", 0.7, _E),
    (kl_shaped, "logprobs", "log_probs", _LP, _D),
    (kl_shaped, "ref_logprobs", "ref_log_probs", _LP, _D),
    (kl_shaped, "beta", "kl_coef", 0.7, _E),
    (sequence_importance_ratio, "logp", "log_probs", _LP, _D),
    (sequence_importance_ratio, "old_logp", "old_log_probs", _LP, _D),
    (kl_penalty_loss, "estimator", "kl_estimator", "k1", _D),
    (kl_penalty_loss_tabular, "estimator", "kl_estimator", "k2", _D),
    (aggregate, "log", "progress", _STREAM, _D),
] + [
    (loss, theirs, ours, value, _E)
    for loss in (ppo_loss, ppo_loss_tabular)
    for theirs, ours, value in (
        ("beta", "kl_coef", 0.3),
        ("epsilon", "clip_low", 0.1),
        ("cliprange", "clip_low", 0.1),
        ("epsilon_high", "clip_high", 0.01),
        ("importance_sampling_level", "ratio_level", "sequence"),
    )
]
_IDS = [f"{f.__name__}-{other}" for f, other, *_ in ALIASES]


def _equal(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _equal(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            _equal(x, y)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)  # bit for bit (NaN where NaN)
    else:
        assert a == b or (a != a and b != b)


@pytest.mark.parametrize("func,other,ours,value,deprecated", ALIASES, ids=_IDS)
def test_each_spelling_maps_to_our_parameter(func, other, ours, value, deprecated):
    expected = func(**{ours: value})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = func(**{other: value})
    _equal(got, expected)
    messages = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]
    if deprecated:
        assert len(messages) == 1 and f"'{other}' is deprecated, use '{ours}'" in messages[0]
        assert caught[0].filename == __file__  # points at the caller
    else:
        assert messages == []
    unchanged = func()
    if ours not in ("log_probs", "ref_log_probs", "old_log_probs", "progress"):
        with pytest.raises(AssertionError):
            _equal(got, unchanged)  # the value really reached the parameter


@pytest.mark.parametrize("func,other,ours,value,deprecated", ALIASES, ids=_IDS)
def test_two_spellings_of_one_parameter_are_a_type_error(func, other, ours, value, deprecated):
    with pytest.raises(TypeError, match=f"got both '{ours}' and '{other}'"):
        func(**{ours: value, other: value})


def test_every_alias_of_the_public_api_is_tested():
    tested = {(f.__name__, other) for f, other, *_ in ALIASES}
    tested.add(("sweep", "log"))  # test_sweep_progress_and_its_deprecated_name (needs no Ray)
    found = set()
    for name in dir(fastlmrl):
        obj = getattr(fastlmrl, name)
        renamed = getattr(obj, "renamed", None)
        if callable(obj) and isinstance(renamed, dict):
            found |= {(name, other) for other in renamed}
    found |= {
        (f"{name}", other) for name in ("aggregate",) for other in sweep_module.aggregate.renamed
    }
    found |= {("kl_shaped", other) for other in fastlmrl.rewards.kl_shaped.renamed}
    assert found == tested


def test_sweep_progress_and_its_deprecated_name():
    assert "progress" in inspect.signature(sweep_module.sweep).parameters
    assert sweep_module.sweep.renamed == {"log": ("progress", True)}
    with pytest.raises(TypeError, match="got both 'progress' and 'log'"):
        sweep_module.sweep({}, progress=False, log=False)  # refused before anything runs


def test_signatures_show_our_names_only():
    for func in (
        fastlmrl.kl_penalty,
        fastlmrl.kl_penalized_rewards,
        fastlmrl.kl_penalty_loss,
        fastlmrl.kl_penalty_loss_tabular,
        fastlmrl.ppo_loss,
        fastlmrl.ppo_loss_tabular,
        fastlmrl.sequence_importance_ratio,
        fastlmrl.rewards.kl_shaped,
    ):
        params = inspect.signature(func).parameters
        for other, (ours, _) in func.renamed.items():
            assert ours in params and other not in params


# ------------------------------------------------------------------------------ configs

CONFIG_ALIASES = [
    (GRPOConfig, "beta", "kl_coef", 0.05),
    (GRPOConfig, "epsilon", "clip", 0.1),
    (GRPOConfig, "epsilon_high", "clip_high", 0.28),
    (GRPOConfig, "num_generations", "group_size", 4),
    (GRPOConfig, "learning_rate", "lr", 0.5),
    (GRPOConfig, "num_iterations", "epochs", 3),
    (GRPOConfig, "loss_type", "loss_normalization", "dr_grpo"),
    (GRPOConfig, "importance_sampling_level", "ratio_level", "sequence"),
    (PPOConfig, "cliprange", "clip", 0.1),
    (PPOConfig, "learning_rate", "lr", 0.5),
    (PPOConfig, "num_ppo_epochs", "epochs", 2),
    (PPOConfig, "num_mini_batches", "minibatches", 2),
    (RLOOConfig, "beta", "kl_coef", 0.05),
    (RLOOConfig, "num_generations", "group_size", 4),
    (RLOOConfig, "rloo_k", "group_size", 4),
    (RLOOConfig, "learning_rate", "lr", 0.5),
    (ReinforceConfig, "beta", "kl_coef", 0.05),
    (ReinforceConfig, "learning_rate", "lr", 0.5),
    (A2CConfig, "beta", "kl_coef", 0.05),
    (A2CConfig, "learning_rate", "lr", 0.5),
    (A2CConfig, "vf_coef", "value_coef", 0.25),
]


@pytest.mark.parametrize(
    "cls,theirs,ours,value",
    CONFIG_ALIASES,
    ids=[f"{c.__name__}-{t}" for c, t, *_ in CONFIG_ALIASES],
)
def test_trainer_configs_accept_trl_names(cls, theirs, ours, value):
    assert getattr(cls(), ours) != value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = cls(**{theirs: value})
    assert config == cls(**{ours: value}) and getattr(config, ours) == value
    assert theirs not in {f.name for f in dataclasses.fields(cls)}  # saved under our name
    assert dataclasses.replace(config, **{ours: value}) == config
    with pytest.raises(TypeError, match=f"{cls.__name__}\\(\\) got both '{ours}' and '{theirs}'"):
        cls(**{ours: value, theirs: value})


def test_every_config_alias_is_tested():
    tested = {(c.__name__, t) for c, t, *_ in CONFIG_ALIASES}
    found = {
        (c.__name__, t)
        for c in (GRPOConfig, PPOConfig, RLOOConfig, ReinforceConfig, A2CConfig)
        for t in c.__init__.renamed
    }
    assert found == tested
