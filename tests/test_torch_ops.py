"""fastlmrl.torch: differentiable custom ops over the fused kernels.

Expected values come from pure-PyTorch formulas written here (log_softmax + gather, the PPO clip,
...) and from the NumPy API on the same inputs; gradients from ``torch.autograd.gradcheck`` in
float64 and from autograd through those formulas.  PyTorch is a test requirement: without it this
module fails to import (the README's test command installs the CPU build first).
"""

import inspect
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

try:
    import torch
except ImportError as exc:  # a missing torch fails the run, it is never skipped
    raise ImportError(
        "the fastlmrl.torch tests need PyTorch: pip install torch==2.13.0 (CPU "
        "build), or pip install 'fastlmrl[torch]'"
    ) from exc

from torch.autograd import gradcheck
from torch.library import opcheck

import fastlmrl
import fastlmrl.torch as ft
from fastlmrl.torch.policy_losses import _LazyResult

F64 = torch.float64
F32 = torch.float32
BF16 = torch.bfloat16


def rng_tensors(n=6, v=7, dtype=F64, seed=0, batch=None):
    """Logits (batch or (n,), v), tokens and per-token inputs."""
    g = torch.Generator().manual_seed(seed)
    shape = batch if batch is not None else (n,)
    x = (torch.randn(*shape, v, generator=g, dtype=F64) * 2).to(dtype)
    t = torch.randint(0, v, shape, generator=g)
    per = {
        "old": (torch.randn(*shape, generator=g, dtype=F64) * 0.5 - np.log(v)).to(dtype),
        "adv": torch.randn(*shape, generator=g, dtype=F64).to(dtype),
        "ref": (torch.randn(*shape, generator=g, dtype=F64) * 0.5 - np.log(v)).to(dtype),
        "ret": torch.randn(*shape, generator=g, dtype=F64).to(dtype),
        "val": torch.randn(*shape, generator=g, dtype=F64).to(dtype),
        "w": (torch.rand(*shape, generator=g, dtype=F64) / np.prod(shape)).to(dtype),
    }
    return x, t, per


# --- pure-PyTorch formulas (independent of fastlmrl) ----------------------------------------------


def torch_logp(x, t):
    return torch.log_softmax(x, -1).gather(-1, t[..., None])[..., 0]


def torch_entropy(x):
    """H = lse(z) - sum_j p_j z_j (masked -inf logits: p_j = 0 and no term)."""
    finite = torch.where(torch.isinf(x), torch.zeros_like(x), x)
    return torch.logsumexp(x, -1) - (torch.softmax(x, -1) * finite).sum(-1)


def torch_kl(logp, ref, estimator):
    if estimator == "k1":
        return logp - ref
    if estimator == "k2":
        return 0.5 * (logp - ref) ** 2
    u = ref - logp
    return torch.exp(u) - 1 - u


def torch_ppo(
    x,
    t,
    old,
    adv,
    w,
    clip_low=0.2,
    clip_high=None,
    dual_clip=None,
    ref=None,
    kl_coef=0.0,
    estimator="k3",
    offsets=None,
):
    """Schulman et al. 2017 eq. 7 (+ clip-higher, dual clip, GSPO-token ratios, KL penalty)."""
    clip_high = clip_low if clip_high is None else clip_high
    logp = torch_logp(x, t)
    if offsets is None:
        ratio = torch.exp(logp - old)
    else:  # GSPO-token: s_k = exp(mean log-ratio over active tokens), sg[s_k] * pi / sg[pi]
        parts = []
        for a, b in zip(offsets[:-1], offsets[1:]):
            d, active = logp[a:b] - old[a:b], (w[a:b] != 0).to(x.dtype)
            mean = (d * active).sum() / active.sum() if active.sum() > 0 else d.sum() * 0
            parts.append(torch.exp(mean).detach() * torch.exp(logp[a:b] - logp[a:b].detach()))
        ratio = torch.cat(parts)
    loss = -torch.minimum(ratio * adv, torch.clamp(ratio, 1 - clip_low, 1 + clip_high) * adv)
    if dual_clip is not None:
        loss = torch.where(adv < 0, torch.minimum(loss, -dual_clip * adv), loss)
    if ref is not None:
        loss = loss + kl_coef * torch_kl(logp, ref, estimator)
    return (w * loss).sum()


def torch_a2c(
    x, t, adv, values, returns, w, value_coef=0.5, entropy_coef=0.01, old=None, clip=None
):
    value_loss = (values - returns) ** 2
    if clip is not None:
        clipped = old + torch.clamp(values - old, -clip, clip)
        value_loss = torch.maximum(value_loss, (clipped - returns) ** 2)
    per = -adv * torch_logp(x, t) + value_coef * value_loss - entropy_coef * torch_entropy(x)
    return (w * per).sum()


def flat_np(t):
    return t.detach().reshape(-1, t.shape[-1]).numpy() if t.ndim > 1 else t.detach().numpy()


# --- import behaviour -----------------------------------------------------------------------------


def test_import_fastlmrl_does_not_import_torch():
    code = "import sys, fastlmrl; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_import_without_torch_names_the_extra():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import fastlmrl.torch\nexcept ImportError as e:\n    print(e)\n"
        "else:\n    raise SystemExit('no ImportError')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    assert "pip install 'fastlmrl[torch]'" in out


# --- log-probs, entropy, log-sum-exp --------------------------------------------------------------

ROW_OPS = [
    (ft.token_log_probs, lambda x, t: torch_logp(x, t), True),
    (ft.entropy, lambda x, t: torch_entropy(x), False),
    (ft.logsumexp, lambda x, t: torch.logsumexp(x, -1), False),
]


@pytest.mark.parametrize(
    "op,formula,takes_tokens", ROW_OPS, ids=["token_log_probs", "entropy", "logsumexp"]
)
def test_row_ops_match_torch_formula_and_gradcheck(op, formula, takes_tokens):
    x, t, _ = rng_tensors(batch=(2, 3), v=5)
    x[0, 1, 2] = float("-inf")  # a masked logit (not the sampled one below)
    t[0, 1] = 3
    x.requires_grad_(True)
    call = (lambda z: op(z, t)) if takes_tokens else op
    got, want = call(x), formula(x, t)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(2, 3, dtype=F64)
    (g_got,) = torch.autograd.grad(got, x, upstream)
    (g_want,) = torch.autograd.grad(want, x, upstream)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-12)
    xs = torch.randn(3, 4, dtype=F64, requires_grad=True)
    ts = torch.tensor([0, 3, 1])
    assert gradcheck(lambda z: op(z, ts) if takes_tokens else op(z), (xs,))


def test_token_log_probs_masked_token_and_nonfinite_upstream():
    """A sampled token whose logit is -inf: log-prob -inf, gradient onehot - p (the fallback)."""
    x = torch.tensor([[0.0, float("-inf"), 1.0], [0.5, 0.2, -0.3]], dtype=F64, requires_grad=True)
    t = torch.tensor([1, 0])
    lp = ft.token_log_probs(x, t)
    assert lp[0] == float("-inf")
    (g,) = torch.autograd.grad(lp, x, torch.tensor([2.0, -1.5], dtype=F64))
    p = torch.softmax(x.detach(), -1)
    want = torch.stack(
        [
            2.0 * (torch.tensor([0.0, 1.0, 0.0], dtype=F64) - p[0]),
            -1.5 * (torch.tensor([1.0, 0.0, 0.0], dtype=F64) - p[1]),
        ]
    )
    torch.testing.assert_close(g, want, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("dtype", [F32, F64])
def test_row_ops_equal_numpy_api(dtype):
    x, t, _ = rng_tensors(n=9, v=33, dtype=dtype)
    xn, tn = x.numpy(), t.numpy()
    np.testing.assert_array_equal(
        ft.token_log_probs(x, t).numpy(), fastlmrl.token_log_probs(xn, tn)
    )
    np.testing.assert_array_equal(ft.entropy(x).numpy(), fastlmrl.entropy(xn))
    np.testing.assert_array_equal(ft.logsumexp(x).numpy(), fastlmrl.logsumexp(xn))
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(ft.token_log_probs(x, t).sum(), x)
    # upstream 1: the fused pass gives exactly log_prob_grad's onehot - p
    np.testing.assert_array_equal(g.numpy(), fastlmrl.log_prob_grad(xn, tn))


# --- losses ---------------------------------------------------------------------------------------

PPO_CASES = {
    "token": dict(clip_low=0.2, clip_high=0.28),
    "dual_clip_kl_k3": dict(clip_low=0.2, dual_clip=2.0, ref=True, kl_coef=0.1, estimator="k3"),
    "kl_k1": dict(ref=True, kl_coef=0.3, estimator="k1"),
    "kl_k2": dict(ref=True, kl_coef=0.3, estimator="k2"),
    "sequence": dict(offsets=[0, 2, 2, 5, 8]),
}


def ours_ppo(x, t, per, case):
    return ft.ppo_loss(
        x,
        t,
        per["old"],
        per["adv"],
        per["w"],
        clip_low=case.get("clip_low", 0.2),
        clip_high=case.get("clip_high"),
        dual_clip=case.get("dual_clip"),
        ratio_level="sequence" if "offsets" in case else "token",
        sequence_offsets=(torch.tensor(case["offsets"]) if "offsets" in case else None),
        ref_log_probs=per["ref"] if case.get("ref") else None,
        kl_coef=case.get("kl_coef", 0.0),
        kl_estimator=case.get("estimator", "k3"),
    )


@pytest.mark.parametrize("name", list(PPO_CASES))
def test_ppo_matches_torch_formula_and_gradcheck(name):
    case = PPO_CASES[name]
    x, t, per = rng_tensors(n=8, v=5, seed=1)
    per["w"][3] = 0.0  # a masked token
    if "offsets" in case:
        # GSPO's setting: one advantage and one weight per sequence.  (With weights or advantages
        # that vary inside a sequence the GSPO-token gradient -- s_k per token, through a
        # stop-gradient -- is not the derivative of the loss value, and gradcheck would say so.)
        offs = case["offsets"]
        for k, (a, b) in enumerate(zip(offs[:-1], offs[1:])):
            per["adv"][a:b] = per["adv"][a]
            per["w"][a:b] = 0.1 * (k + 1)
        per["w"][3] = 0.0
    x.requires_grad_(True)
    res = ours_ppo(x, t, per, case)
    want = torch_ppo(
        x,
        t,
        per["old"],
        per["adv"],
        per["w"],
        case.get("clip_low", 0.2),
        case.get("clip_high"),
        case.get("dual_clip"),
        per["ref"] if case.get("ref") else None,
        case.get("kl_coef", 0.0),
        case.get("estimator", "k3"),
        case.get("offsets"),
    )
    torch.testing.assert_close(res.loss, want, rtol=1e-12, atol=1e-14)
    (g_got,) = torch.autograd.grad(res.loss * 2.5, x)  # upstream 2.5 honoured
    (g_want,) = torch.autograd.grad(want * 2.5, x)
    torch.testing.assert_close(g_got, g_want, rtol=1e-12, atol=1e-14)
    assert gradcheck(lambda z: ours_ppo(z, t, per, case).loss, (x,))


def test_ppo_diagnostics_match_formulas():
    x, t, per = rng_tensors(n=50, v=6, seed=2)
    res = ft.ppo_loss(
        x, t, per["old"], per["adv"], per["w"], clip_low=0.1, clip_high=0.15, dual_clip=1.5
    )
    logp = torch_logp(x, t)
    rho, adv, w = torch.exp(logp - per["old"]), per["adv"], per["w"]
    clipped = ((adv > 0) & (rho > 1.15)) | ((adv < 0) & (rho < 0.9))
    unclipped_loss = -torch.minimum(rho * adv, torch.clamp(rho, 0.9, 1.15) * adv)
    dual = (adv < 0) & (unclipped_loss > -1.5 * adv)
    sw = w.sum()
    assert clipped.any() and dual.any()
    torch.testing.assert_close(res.clip_fraction, (w * clipped).sum() / sw)
    torch.testing.assert_close(res.dual_clip_fraction, (w * dual).sum() / sw)
    torch.testing.assert_close(res.approx_kl_k1, (w * -(logp - per["old"])).sum() / sw)
    torch.testing.assert_close(res.approx_kl_k3, (w * (rho - 1 - torch.log(rho))).sum() / sw)
    torch.testing.assert_close(res.ratios, rho)
    torch.testing.assert_close(res.log_probs, logp)
    assert res.ratios.requires_grad is False


def test_reinforce_and_kl_penalty_match_formulas():
    x, t, per = rng_tensors(n=7, v=4, seed=3)
    x.requires_grad_(True)
    w, ret = per["w"], per["ret"]
    for baseline in (None, "mean", per["val"]):
        res = ft.reinforce_loss(x, t, ret, w, baseline=baseline)
        b = (
            0.0
            if baseline is None
            else (w * ret).sum() / w.sum()
            if isinstance(baseline, str)
            else baseline
        )
        want = (w * -(ret - b) * torch_logp(x, t)).sum()
        torch.testing.assert_close(res.loss, want, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            torch.autograd.grad(res.loss, x)[0],
            torch.autograd.grad(want, x)[0],
            rtol=1e-12,
            atol=1e-14,
        )
    for est in ("k1", "k2", "k3"):
        res = ft.kl_penalty_loss(x, t, per["ref"], w, kl_estimator=est)
        want = (w * torch_kl(torch_logp(x, t), per["ref"], est)).sum()
        torch.testing.assert_close(res.loss, want, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(
            torch.autograd.grad(-res.loss, x)[0],
            torch.autograd.grad(-want, x)[0],
            rtol=1e-12,
            atol=1e-14,
        )
    assert gradcheck(lambda z: ft.reinforce_loss(z, t, ret, w, "mean").loss, (x,))
    assert gradcheck(lambda z: ft.kl_penalty_loss(z, t, per["ref"], w).loss, (x,))


@pytest.mark.parametrize("clip", [None, 0.3])
def test_a2c_gradients_wrt_logits_and_values(clip):
    x, t, per = rng_tensors(n=6, v=5, seed=4)
    x.requires_grad_(True)
    v = per["val"].clone().requires_grad_(True)
    old = v.detach() + torch.linspace(-0.6, 0.6, 6, dtype=F64) if clip else None
    kw = dict(value_coef=0.7, entropy_coef=0.05, old_values=old, value_clip=clip)
    res = ft.a2c_loss(x, t, per["adv"], v, per["ret"], per["w"], **kw)
    want = torch_a2c(x, t, per["adv"], v, per["ret"], per["w"], 0.7, 0.05, old, clip)
    torch.testing.assert_close(res.loss, want, rtol=1e-12, atol=1e-14)
    got = torch.autograd.grad(res.loss * -1.5, (x, v))
    exp = torch.autograd.grad(want * -1.5, (x, v))
    for a, b in zip(got, exp):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(
        res.mean_entropy, (per["w"] * torch_entropy(x)).sum() / per["w"].sum()
    )
    assert gradcheck(
        lambda z, vv: ft.a2c_loss(z, t, per["adv"], vv, per["ret"], per["w"], **kw).loss, (x, v)
    )


def test_losses_equal_numpy_api_float32():
    x, t, per = rng_tensors(n=40, v=300, dtype=F32, seed=5)
    xn, tn = x.numpy(), t.numpy()
    p = {k: v.numpy() for k, v in per.items()}
    x.requires_grad_(True)
    offs = np.array([0, 10, 25, 40])
    pairs = [
        (
            ft.ppo_loss(
                x,
                t,
                per["old"],
                per["adv"],
                per["w"],
                clip_high=0.3,
                dual_clip=3.0,
                ratio_level="sequence",
                sequence_offsets=torch.from_numpy(offs),
                ref_log_probs=per["ref"],
                kl_coef=0.05,
            ),
            fastlmrl.ppo_loss(
                xn,
                tn,
                p["old"],
                p["adv"],
                p["w"],
                clip_high=0.3,
                dual_clip=3.0,
                ratio_level="sequence",
                sequence_offsets=offs,
                ref_log_probs=p["ref"],
                kl_coef=0.05,
            ),
        ),
        (
            ft.reinforce_loss(x, t, per["ret"], baseline="mean"),
            fastlmrl.reinforce_loss(xn, tn, p["ret"], baseline="mean"),
        ),
        (
            ft.kl_penalty_loss(x, t, per["ref"], per["w"], "k2"),
            fastlmrl.kl_penalty_loss(xn, tn, p["ref"], p["w"], "k2"),
        ),
        (
            ft.a2c_loss(x, t, per["adv"], per["val"], per["ret"]),
            fastlmrl.a2c_loss(xn, tn, p["adv"], p["val"], p["ret"]),
        ),
    ]
    for ours, theirs in pairs:
        assert ours.loss.dtype == F32
        assert ours.loss.item() == np.float32(theirs.loss)
        (g,) = torch.autograd.grad(ours.loss, x)
        np.testing.assert_array_equal(g.numpy(), theirs.grad_logits)
        for name in ours._fields[1:]:
            np.testing.assert_array_equal(
                getattr(ours, name).numpy(), getattr(theirs, name), err_msg=name
            )


def test_loss_weights_modes_and_trl_aliases():
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    m = mask.to(F64)
    lens = m.sum(1, keepdim=True).clamp(min=1)
    expected = {"grpo": m / (3 * lens), "bnpo": m / 6, "dr_grpo": m / (3 * 4), "dapo": m / 6}
    for mode, want in expected.items():
        torch.testing.assert_close(ft.loss_weights(mask, mode), want, rtol=1e-15, atol=0)
    torch.testing.assert_close(
        ft.loss_weights(mask, loss_type="dapo", num_tokens=60, dtype=F32), (m / 60).float()
    )
    x, t, per = rng_tensors(batch=(3, 4), v=5)
    w = ft.loss_weights(mask, "grpo")
    a = ft.ppo_loss(
        x,
        t,
        per["old"],
        per["adv"],
        w,
        epsilon=0.1,
        epsilon_high=0.3,
        beta=0.02,
        ref_log_probs=per["ref"],
    )
    b = ft.ppo_loss(
        x,
        t,
        per["old"],
        per["adv"],
        w,
        clip_low=0.1,
        clip_high=0.3,
        kl_coef=0.02,
        ref_log_probs=per["ref"],
    )
    assert a.loss.item() == b.loss.item()
    with pytest.raises(TypeError, match="clip_low"):
        ft.ppo_loss(x, t, per["old"], per["adv"], w, clip_low=0.1, epsilon=0.1)


# --- other spellings (TRL's, silent; our deprecated ones, warning) --------------------------------


def _spelling_calls():
    """Each public wrapper with aliases, called on fixed inputs: its outputs and the gradients
    of its loss (detached tensors, compared bit for bit)."""
    x, t, per = rng_tensors(n=6, v=7, seed=21)
    o, a, r, w = per["old"], per["adv"], per["ref"], per["w"]
    offs = torch.tensor([0, 2, 6])
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)

    def run(call, *leaves):
        leaves = [z.detach().clone().requires_grad_(True) for z in leaves]
        res = call(*leaves)
        outs = list(res) if isinstance(res, (tuple, _LazyResult)) else [res]
        grads = torch.autograd.grad(outs[0], leaves) if outs[0].requires_grad else ()
        return [z.detach() for z in outs] + list(grads)

    hidden, weight, bias, tokens = head_tensors(n=6, v=7)
    return {
        "ppo_loss": lambda **kw: run(
            lambda z: ft.ppo_loss(z, t, o, a, w, sequence_offsets=offs, ref_log_probs=r, **kw), x
        ),
        "linear_ppo_loss": lambda **kw: run(
            lambda h, m, b: ft.linear_ppo_loss(
                h,
                m,
                tokens,
                o,
                a,
                w,
                sequence_offsets=offs,
                ref_log_probs=r,
                bias=b,
                chunk_size=2,
                **kw,
            ),
            hidden,
            weight,
            bias,
        ),
        "a2c_loss": lambda **kw: run(
            lambda z, v: ft.a2c_loss(
                z,
                t,
                a,
                v,
                per["ret"],
                w,
                **kw,
                old_values=None if kw.get("value_clip", kw.get("cliprange_value")) is None else o,
            ),
            x,
            per["val"],
        ),
        "kl_penalty_loss": lambda **kw: run(lambda z: ft.kl_penalty_loss(z, t, r, w, **kw), x),
        "loss_weights": lambda **kw: run(lambda: ft.loss_weights(mask, **kw)),
    }


_PPO_TRL = [
    ("epsilon", "clip_low", 0.2, 0.1),
    ("cliprange", "clip_low", 0.2, 0.1),
    ("epsilon_high", "clip_high", None, 0.05),
    ("beta", "kl_coef", 0.0, 0.3),
    ("importance_sampling_level", "ratio_level", "token", "sequence"),
]
#: (function, other spelling, our name, our default, another value, deprecated?)
TORCH_SPELLINGS = [
    (f, *alias, False) for f in ("ppo_loss", "linear_ppo_loss") for alias in _PPO_TRL
] + [
    ("a2c_loss", "vf_coef", "value_coef", 0.5, 0.25, False),
    ("a2c_loss", "cliprange_value", "value_clip", None, 0.1, False),
    ("loss_weights", "loss_type", "mode", "grpo", "dapo", False),
    ("kl_penalty_loss", "estimator", "kl_estimator", "k3", "k1", True),
]
_SPELLING_IDS = [f"{f}-{other}" for f, other, *_ in TORCH_SPELLINGS]


def _same_bits(a, b):
    return len(a) == len(b) and all(
        x.dtype == y.dtype
        and x.shape == y.shape
        and torch.equal(x.nan_to_num(), y.nan_to_num())
        and torch.equal(x.isnan(), y.isnan())
        for x, y in zip(a, b)
    )


@pytest.mark.parametrize(
    "func,other,ours,default,value,deprecated", TORCH_SPELLINGS, ids=_SPELLING_IDS
)
def test_other_spelling_gives_our_result_bit_for_bit(func, other, ours, default, value, deprecated):
    call = _spelling_calls()[func]
    expected = call(**{ours: value})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = call(**{other: value})
    assert _same_bits(got, expected)
    assert not _same_bits(got, call(**{ours: default}))  # the value reached the parameter
    messages = [str(m.message) for m in caught if issubclass(m.category, DeprecationWarning)]
    if deprecated:
        assert len(messages) == 1 and f"'{other}' is deprecated, use '{ours}'" in messages[0]
        assert [m.filename for m in caught] == [__file__]  # points at the caller
    else:
        assert messages == []  # the ecosystem's spelling is silent


@pytest.mark.parametrize(
    "func,other,ours,default,value,deprecated", TORCH_SPELLINGS, ids=_SPELLING_IDS
)
def test_two_spellings_are_a_type_error_naming_both(func, other, ours, default, value, deprecated):
    call = _spelling_calls()[func]
    # ours at its default value counts as given (clip_low=0.2, epsilon=0.3 is refused)
    for ours_value in (default, value):
        with pytest.raises(TypeError, match=f"{func}\\(\\) got both '{ours}' and '{other}'"):
            call(**{ours: ours_value, other: value})


def test_ppo_clip_low_at_its_default_with_epsilon_is_refused():
    x, t, per = rng_tensors(n=4, v=5, seed=22)
    hidden, weight, _, tokens = head_tensors(n=4, v=5)
    with pytest.raises(TypeError, match="got both 'clip_low' and 'epsilon'"):
        ft.ppo_loss(x, t, per["old"], per["adv"], clip_low=0.2, epsilon=0.3)
    with pytest.raises(TypeError, match="got both 'clip_low' and 'epsilon'"):
        ft.ppo_loss(x, t, per["old"], per["adv"], None, 0.2, epsilon=0.3)  # ours positionally
    with pytest.raises(TypeError, match="got both 'clip_low' and 'cliprange'"):
        ft.linear_ppo_loss(
            hidden, weight, tokens, per["old"], per["adv"], clip_low=0.2, cliprange=0.3
        )
    with pytest.raises(TypeError, match="got both 'epsilon' and 'cliprange'"):
        ft.ppo_loss(x, t, per["old"], per["adv"], epsilon=0.2, cliprange=0.2)


def test_torch_spellings_match_the_numpy_api_and_are_all_tested():
    assert ft.ppo_loss.renamed == ft.linear_ppo_loss.renamed == fastlmrl.ppo_loss.renamed
    assert ft.kl_penalty_loss.renamed == fastlmrl.kl_penalty_loss.renamed
    found = set()
    for name in ft.__all__:
        obj = getattr(ft, name)
        renamed = getattr(obj, "renamed", None)
        if isinstance(renamed, dict):
            found |= {
                (name, other, ours, deprecated) for other, (ours, deprecated) in renamed.items()
            }
            params = inspect.signature(obj).parameters
            assert not set(renamed) & set(params)  # the signature shows our names only
    assert found == {(f, other, ours, d) for f, other, ours, _, _, d in TORCH_SPELLINGS}


# --- dtypes and layouts ---------------------------------------------------------------------------


def test_bfloat16_computed_in_float32():
    x, t, per = rng_tensors(n=12, v=50, dtype=BF16, seed=6)
    x.requires_grad_(True)
    res = ft.ppo_loss(x, t, per["old"], per["adv"], per["w"])
    (g,) = torch.autograd.grad(res.loss, x)
    assert g.dtype == BF16 and res.loss.dtype == F32
    ref = fastlmrl.ppo_loss(
        x.detach().float().numpy(),
        t.numpy(),
        per["old"].float().numpy(),
        per["adv"].float().numpy(),
        per["w"].float().numpy(),
    )
    assert res.loss.item() == np.float32(ref.loss)
    assert torch.equal(g, torch.from_numpy(ref.grad_logits).to(BF16))
    lp = ft.token_log_probs(x, t)
    assert lp.dtype == BF16
    assert torch.equal(
        lp,
        torch.from_numpy(fastlmrl.token_log_probs(x.detach().float().numpy(), t.numpy())).to(BF16),
    )
    (g,) = torch.autograd.grad(lp.sum(), x)
    assert g.dtype == BF16
    torch.testing.assert_close(
        g.float(),
        torch.from_numpy(fastlmrl.log_prob_grad(x.detach().float().numpy(), t.numpy()))
        .to(BF16)
        .float(),
    )


def test_noncontiguous_and_expanded_inputs():
    x, t, per = rng_tensors(batch=(4, 3), v=6, seed=7)
    base = torch.randn(6, 3, 4, dtype=F64)  # x as a transposed view: non-contiguous
    base.copy_(x.permute(2, 1, 0))
    xt = base.permute(2, 1, 0).requires_grad_(False)
    assert not xt.is_contiguous() and torch.equal(xt, x)
    old = torch.tensor(-1.5, dtype=F64).expand(4, 3)  # stride-0 per-token input
    adv = per["adv"].t().contiguous().t()
    a = ft.ppo_loss(xt, t, old, adv, per["w"])
    b = ft.ppo_loss(x, t, old.contiguous(), adv.contiguous(), per["w"])
    assert a.loss.item() == b.loss.item() and torch.equal(a.ratios, b.ratios)
    row = torch.randn(6, dtype=F64, requires_grad=True)  # expanded logits, gradient summed back
    xe = row.expand(4, 3, 6)
    tok = torch.tensor(2).expand(4, 3)
    lp = ft.token_log_probs(xe, tok)
    (g,) = torch.autograd.grad(lp.sum(), row)
    torch.testing.assert_close(
        g, 12 * (torch.nn.functional.one_hot(torch.tensor(2), 6) - torch.softmax(row.detach(), 0))
    )


def test_retain_graph_and_repeated_backward():
    x, t, per = rng_tensors(n=5, v=4, seed=8)
    x.requires_grad_(True)
    loss = ft.ppo_loss(x, t, per["old"], per["adv"]).loss
    loss.backward(retain_graph=True)
    once = x.grad.clone()
    loss.backward(retain_graph=True)
    loss.backward()
    torch.testing.assert_close(x.grad, 3 * once, rtol=1e-15, atol=0)


# --- fused LM head --------------------------------------------------------------------------------


def head_tensors(n=10, h=4, v=7, dtype=F64, seed=9):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=g, dtype=F64).to(dtype).requires_grad_(True)
    weight = torch.randn(v, h, generator=g, dtype=F64).to(dtype).requires_grad_(True)
    bias = torch.randn(v, generator=g, dtype=F64).to(dtype).requires_grad_(True)
    tokens = torch.randint(0, v, (n,), generator=g)
    return hidden, weight, bias, tokens


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_linear_token_log_probs_matches_unfused(chunk):
    hidden, weight, bias, tokens = head_tensors()
    got = ft.linear_token_log_probs(hidden, weight, tokens, bias=bias, chunk_size=chunk)
    want = torch_logp(torch.nn.functional.linear(hidden, weight, bias), tokens)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    up = torch.randn(10, dtype=F64)
    for a, b in zip(
        torch.autograd.grad(got, (hidden, weight, bias), up),
        torch.autograd.grad(want, (hidden, weight, bias), up),
    ):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    if chunk == 3:
        assert gradcheck(
            lambda hh, ww, bb: ft.linear_token_log_probs(hh, ww, tokens, bb, 3),
            (hidden, weight, bias),
        )


def test_linear_token_log_probs_keeps_one_chunk_of_logits_for_backward(monkeypatch):
    """A batch of one chunk whose gradient will be needed: the backward pass reuses the forward
    pass's logits (no second GEMM), with the same gradients; more chunks, or no gradient: the
    logits are not kept (the backward pass computes each chunk again)."""
    from fastlmrl.torch import lm_head

    calls = []
    logits = lm_head._Head.logits
    monkeypatch.setattr(
        lm_head._Head, "logits", lambda self, a, b: calls.append((a, b)) or logits(self, a, b)
    )
    hidden, weight, bias, tokens = head_tensors()
    up = torch.linspace(-1, 2, 10, dtype=F64)
    grads = {}
    for chunk, forward, backward in ((64, 1, 0), (10, 1, 0), (4, 3, 3)):
        calls.clear()
        lp = ft.linear_token_log_probs(hidden, weight, tokens, bias=bias, chunk_size=chunk)
        assert len(calls) == forward
        calls.clear()
        grads[chunk] = torch.autograd.grad(lp, (hidden, weight, bias), up)
        assert len(calls) == backward
    for a, b, c in zip(grads[64], grads[10], grads[4]):
        torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)
        assert torch.equal(a, b)
    with torch.no_grad():
        out = torch.ops.fastlmrl.linear_token_log_probs(hidden, weight, tokens, bias, 64, False)
    assert out[1].shape == (0, 7)
    nan_up = up.clone()
    nan_up[3] = float("nan")  # a non-finite upstream gradient: the unfused formula, NaN row 3
    (gh,) = torch.autograd.grad(
        ft.linear_token_log_probs(hidden, weight, tokens, chunk_size=64), hidden, nan_up
    )
    assert torch.isnan(gh[3]).all() and torch.isfinite(gh[torch.arange(10) != 3]).all()


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_linear_ppo_loss_matches_unfused(level):
    hidden, weight, bias, tokens = head_tensors(n=12)
    _, _, per = rng_tensors(n=12, v=7, seed=10)
    offs = torch.tensor([0, 5, 5, 7, 12]) if level == "sequence" else None
    kw = dict(
        weights=per["w"],
        clip_high=0.3,
        dual_clip=2.5,
        ratio_level=level,
        sequence_offsets=offs,
        ref_log_probs=per["ref"],
        kl_coef=0.1,
    )
    want = ft.ppo_loss(
        torch.nn.functional.linear(hidden, weight, bias), tokens, per["old"], per["adv"], **kw
    )
    formula = torch_ppo(
        torch.nn.functional.linear(hidden, weight, bias),
        tokens,
        per["old"],
        per["adv"],
        per["w"],
        0.2,
        0.3,
        2.5,
        per["ref"],
        0.1,
        "k3",
        None if offs is None else offs.tolist(),
    )
    g_want = torch.autograd.grad(formula, (hidden, weight, bias))
    for chunk in (1, 4, 100):  # sequence level: chunks of whole sequences, one may exceed 4
        got = ft.linear_ppo_loss(
            hidden, weight, tokens, per["old"], per["adv"], bias=bias, chunk_size=chunk, **kw
        )
        for name in got._fields:
            torch.testing.assert_close(
                getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-14, msg=name
            )
        for a, b in zip(torch.autograd.grad(got.loss, (hidden, weight, bias)), g_want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    if level == "sequence":  # random per-token weights: GSPO-token is not d(loss) (see above)
        return
    assert gradcheck(
        lambda hh, ww, bb: (
            ft.linear_ppo_loss(
                hh, ww, tokens, per["old"], per["adv"], bias=bb, chunk_size=5, **kw
            ).loss
        ),
        (hidden, weight, bias),
    )


@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_linear_reinforce_loss_with_returns_1_is_the_cross_entropy(chunk):
    """returns 1, default weights 1/N: the mean cross-entropy of F.linear, loss and gradients
    (PyTorch's own F.cross_entropy, not our code), with and without bias."""
    hidden, weight, bias, tokens = head_tensors()
    for b in (bias, None):
        leaves = (hidden, weight) if b is None else (hidden, weight, b)
        got = ft.linear_reinforce_loss(
            hidden, weight, tokens, torch.ones(10, dtype=F64), bias=b, chunk_size=chunk
        )
        want = torch.nn.functional.cross_entropy(
            torch.nn.functional.linear(hidden, weight, b), tokens
        )
        torch.testing.assert_close(got.loss, want, rtol=1e-13, atol=1e-14)
        torch.testing.assert_close(got.token_loss, -got.log_probs, rtol=0, atol=0)
        for a, c in zip(
            torch.autograd.grad(got.loss * 0.7, leaves), torch.autograd.grad(want * 0.7, leaves)
        ):
            torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("baseline", [None, "mean", "tensor"])
def test_linear_reinforce_loss_matches_unfused(baseline):
    hidden, weight, bias, tokens = head_tensors(n=12)
    _, _, per = rng_tensors(n=12, v=7, seed=17)
    base = per["val"] if baseline == "tensor" else baseline
    want = ft.reinforce_loss(
        torch.nn.functional.linear(hidden, weight, bias),
        tokens,
        per["ret"],
        per["w"],
        baseline=base,
    )
    b = (
        torch.zeros(12, dtype=F64)
        if baseline is None
        else per["val"]
        if baseline == "tensor"
        else ((per["w"] * per["ret"]).sum() / per["w"].sum()).expand(12)
    )
    logp = torch_logp(torch.nn.functional.linear(hidden, weight, bias), tokens)
    formula = (per["w"] * -(per["ret"] - b) * logp).sum()
    g_want = torch.autograd.grad(formula, (hidden, weight, bias))
    for chunk in (1, 5, 100):
        got = ft.linear_reinforce_loss(
            hidden, weight, tokens, per["ret"], per["w"], base, bias=bias, chunk_size=chunk
        )
        for name in got._fields:
            torch.testing.assert_close(
                getattr(got, name), getattr(want, name), rtol=1e-12, atol=1e-14, msg=name
            )
        torch.testing.assert_close(got.loss, formula, rtol=1e-12, atol=1e-14)
        for a, c in zip(torch.autograd.grad(got.loss, (hidden, weight, bias)), g_want):
            torch.testing.assert_close(a, c, rtol=1e-12, atol=1e-14)
    assert gradcheck(
        lambda hh, ww, bb: (
            ft.linear_reinforce_loss(
                hh, ww, tokens, per["ret"], per["w"], base, bias=bb, chunk_size=5
            ).loss
        ),
        (hidden, weight, bias),
    )


def test_linear_reinforce_loss_float32_bfloat16_and_frozen_weight():
    hidden, weight, _, tokens = head_tensors(n=9, h=8, v=40, dtype=F32)
    ones = torch.ones(9)
    weight.requires_grad_(False)
    got = ft.linear_reinforce_loss(hidden, weight, tokens, ones, chunk_size=4)
    want = torch.nn.functional.cross_entropy(hidden @ weight.T, tokens)
    assert got.loss.dtype == F32
    torch.testing.assert_close(got.loss, want, rtol=1e-6, atol=1e-7)
    (gh,) = torch.autograd.grad(got.loss, hidden)
    torch.testing.assert_close(gh, torch.autograd.grad(want, hidden)[0], rtol=1e-5, atol=1e-7)
    hb, wb = hidden.detach().to(BF16).requires_grad_(True), weight.to(BF16).requires_grad_(True)
    res = ft.linear_reinforce_loss(hb, wb, tokens, ones, chunk_size=4)
    gh, gw = torch.autograd.grad(res.loss, (hb, wb))
    assert res.loss.dtype == F32 and gh.dtype == BF16 and gw.dtype == BF16
    h32, w32 = hb.detach().float().requires_grad_(True), wb.detach().float().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(h32 @ w32.T, tokens)
    torch.testing.assert_close(res.loss, ce, rtol=1e-6, atol=1e-6)
    for a, b in zip((gh, gw), torch.autograd.grad(ce, (h32, w32))):
        torch.testing.assert_close(a.float(), b.to(BF16).float(), rtol=2e-2, atol=1e-3)


def _in_place_cases():
    """(backend, dtype, (N, V), threads): every backend at a small size; the compiled ones also
    multi-threaded and at 64 MiB of float32 (the Numba kernel's streaming-store path)."""
    cases = []
    for backend in fastlmrl.available_backends():
        for dtype in (np.float32, np.float64):
            cases.append((backend, dtype, (9, 37), 1))
        if backend != "python":
            cases.append((backend, np.float32, (300, 1000), 2))
            cases.append((backend, np.float32, (4096, 4096), 2))
    return cases


@pytest.mark.parametrize(
    "backend,dtype,size,threads", _in_place_cases(), ids=lambda c: str(getattr(c, "__name__", c))
)
def test_loss_kernels_write_their_gradient_over_the_logits_bit_for_bit(
    backend, dtype, size, threads
):
    """The fused LM head lets the PPO and REINFORCE kernels write the gradient over the chunk's
    logits: in every backend that gives bit for bit the gradient and per-token outputs of a
    separate output array (each row is read fully before its gradient row is written)."""
    from fastlmrl import _backend
    from fastlmrl.policy_losses import KL_ESTIMATORS

    n, v = size
    rng = np.random.default_rng(n + v)
    logits = (rng.standard_normal((n, v)) * 3).astype(dtype)
    logits[1, ::3] = -np.inf  # masked entries
    tokens = rng.integers(0, v, n)
    tokens[1] = 1
    old = (rng.standard_normal(n) * 0.3 - np.log(v)).astype(dtype)
    adv, ret = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    ref = (rng.standard_normal(n) * 0.3 - np.log(v)).astype(dtype)
    w = (rng.random(n) / n).astype(dtype)
    offs = np.array([0, 2, 2, n // 2, n], dtype=np.int64)
    with fastlmrl.use_backend(backend):
        fastlmrl.set_num_threads(threads)
        try:
            k = _backend.kernels()
            calls = {
                "ppo_token": lambda x, g, outs: k.ppo_loss(
                    x,
                    tokens,
                    old,
                    adv,
                    w,
                    ref,
                    np.zeros(1, dtype=np.int64),
                    0.2,
                    0.28,
                    3.0,
                    0.1,
                    KL_ESTIMATORS["k3"],
                    0,
                    *outs,
                    g,
                    np.zeros(7),
                    threads,
                ),
                "ppo_sequence": lambda x, g, outs: k.ppo_loss(
                    x,
                    tokens,
                    old,
                    adv,
                    w,
                    ref,
                    offs,
                    0.2,
                    0.2,
                    0.0,
                    0.05,
                    KL_ESTIMATORS["k2"],
                    1,
                    *outs,
                    g,
                    np.zeros(7),
                    threads,
                ),
                "reinforce": lambda x, g, outs: k.reinforce_loss(
                    x,
                    tokens,
                    ret,
                    np.zeros(n, dtype=dtype),
                    np.ones(n, dtype=dtype),
                    *outs[:2],
                    g,
                    np.zeros(1),
                    threads,
                ),
            }
            for name, call in calls.items():
                separate = np.full_like(logits, np.nan)
                outs_a = [np.full(n, np.nan) for _ in range(3)]
                assert call(logits, separate, outs_a) == 0, name
                x = logits.copy()
                outs_b = [np.full(n, np.nan) for _ in range(3)]
                assert call(x, x, outs_b) == 0, name
                assert x.tobytes() == separate.tobytes(), name  # bits, signed zeros included
                for a, b in zip(outs_a, outs_b):
                    assert a.tobytes() == b.tobytes(), name
        finally:
            fastlmrl.set_num_threads(None)


def test_linear_ops_float32_bfloat16_and_frozen_weight():
    hidden, weight, _, tokens = head_tensors(n=9, h=8, v=40, dtype=F32)
    _, _, per = rng_tensors(n=9, v=40, dtype=F32, seed=11)
    weight.requires_grad_(False)
    got = ft.linear_ppo_loss(hidden, weight, tokens, per["old"], per["adv"], chunk_size=4)
    want = ft.ppo_loss(hidden @ weight.T, tokens, per["old"], per["adv"])
    torch.testing.assert_close(got.loss, want.loss, rtol=1e-6, atol=1e-7)
    (gh,) = torch.autograd.grad(got.loss, hidden)
    torch.testing.assert_close(gh, torch.autograd.grad(want.loss, hidden)[0], rtol=1e-5, atol=1e-7)
    hb, wb = hidden.detach().to(BF16).requires_grad_(True), weight.to(BF16).requires_grad_(True)
    lp = ft.linear_token_log_probs(hb, wb, tokens, chunk_size=4)
    assert lp.dtype == BF16
    gh, gw = torch.autograd.grad(lp.sum(), (hb, wb))
    assert gh.dtype == BF16 and gw.dtype == BF16
    h32, w32 = hb.detach().float().requires_grad_(True), wb.detach().float().requires_grad_(True)
    lp32 = torch_logp(h32 @ w32.T, tokens)
    torch.testing.assert_close(lp.float(), lp32.to(BF16).float())
    for a, b in zip((gh, gw), torch.autograd.grad(lp32.sum(), (h32, w32))):
        torch.testing.assert_close(a.float(), b.to(BF16).float(), rtol=2e-2, atol=1e-2)


# --- opcheck and torch.compile --------------------------------------------------------------------


def opcheck_cases():
    x, t, per = rng_tensors(n=6, v=7, seed=12)
    x.requires_grad_(True)
    v = per["val"].clone().requires_grad_(True)
    hidden, weight, bias, tokens = head_tensors(n=6)
    ops = torch.ops.fastlmrl
    offs = torch.tensor([0, 4, 6])
    o, a, w, r = per["old"], per["adv"], per["w"], per["ref"]
    return [
        (ops.token_log_probs, (x, t)),
        (ops.token_log_probs_backward, (x.detach(), t, a)),
        (ops.entropy, (x,)),
        (ops.entropy_backward, (x.detach(), a, r)),
        (ops.logsumexp, (x,)),
        (ops.logsumexp_backward, (x.detach(), a, r)),
        (ops.ppo_loss, (x, t, o, a, w, 0.2, 0.28, None, "token", None, None, 0.0, "k3")),
        (ops.ppo_loss, (x, t, o, a, None, 0.2, None, 2.0, "sequence", offs, r, 0.1, "k2")),
        (ops.reinforce_loss, (x, t, a, w, None, "mean")),
        (ops.kl_penalty_loss, (x, t, r, None, "k1")),
        (ops.a2c_loss, (x, t, a, v, o, w, 0.5, 0.01, None, None)),
        (ops.loss_weights, (torch.ones(2, 3, dtype=torch.bool), "dapo", None, None, None)),
        (ops.linear_token_log_probs, (hidden, weight, tokens, bias, 4, True)),
        (ops.linear_token_log_probs, (hidden, weight, tokens, bias, 6, True)),
        (
            ops.linear_token_log_probs_backward,
            (
                hidden.detach(),
                weight.detach(),
                tokens,
                None,
                a,
                4,
                True,
                True,
                False,
                torch.empty(0, 7, dtype=F64),
            ),
        ),
        (
            ops.linear_token_log_probs_backward,
            (
                hidden.detach(),
                weight.detach(),
                tokens,
                bias.detach(),
                a,
                6,
                True,
                False,
                True,
                torch.nn.functional.linear(hidden, weight, bias).detach(),
            ),
        ),
        (
            ops.linear_ppo_loss,
            (
                hidden,
                weight,
                bias,
                tokens,
                o,
                a,
                None,
                0.2,
                None,
                None,
                "token",
                None,
                None,
                0.0,
                "k3",
                4,
                True,
                True,
                True,
            ),
        ),
        (
            ops.linear_reinforce_loss,
            (hidden, weight, bias, tokens, a, w, None, "mean", 4, True, True, True),
        ),
        (
            ops.linear_reinforce_loss,
            (hidden, weight.detach(), None, tokens, a, None, r, "", 4, True, False, False),
        ),
    ]


def test_every_op_is_opchecked():
    checked = {str(op).split(".")[1] for op, _ in opcheck_cases()}
    registered = {
        name
        for name in dir(torch.ops.fastlmrl)
        if not name.startswith("_")
        and isinstance(getattr(torch.ops.fastlmrl, name), torch._ops.OpOverloadPacket)
    }
    registered.discard("sample_tokens")  # its own test module (issue 12 item 3)
    assert registered <= checked, registered - checked


@pytest.mark.parametrize("i", range(len(opcheck_cases())))
def test_opcheck(i):
    op, args = opcheck_cases()[i]
    opcheck(op, args)


@pytest.mark.parametrize("i", range(len(opcheck_cases())))
def test_eager_fast_path_equals_the_custom_op(i):
    """In eager mode the wrappers call each op's implementation without the dispatcher (an
    autograd.Function of the same formulas): outputs and gradients equal the registered custom
    op's bit for bit, and the custom op is what torch.compile traces (test below)."""
    from fastlmrl.torch._tensors import EAGER_OPS

    op, args = opcheck_cases()[i]
    name = str(op).split(".")[1]
    if name == "loss_weights":  # no (N, V) kernel: always the custom op
        assert name not in EAGER_OPS
        return
    eager = EAGER_OPS[name]
    results = []
    for call in (op, eager):
        inputs = [
            a.detach().clone().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a
            for a in args
        ]
        out = call(*inputs)
        out = out if isinstance(out, tuple) else (out,)
        leaves = [a for a in inputs if isinstance(a, torch.Tensor) and a.requires_grad]
        grads = ()
        if leaves and out[0].requires_grad:
            up = torch.linspace(0.5, 1.5, out[0].numel(), dtype=out[0].dtype).reshape(out[0].shape)
            grads = torch.autograd.grad(out[0], leaves, up, allow_unused=True)
            kind = type(out[0].grad_fn).__name__
            assert kind.startswith("fastlmrl_") == (call is eager), kind
        results.append((out, grads))
    (out_a, grads_a), (out_b, grads_b) = results
    assert len(out_a) == len(out_b) and len(grads_a) == len(grads_b)
    for a, b in zip(out_a + grads_a, out_b + grads_b):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.dtype == b.dtype and a.shape == b.shape
            assert (
                torch.equal(a, b)
                or torch.equal(a.isnan(), b.isnan())
                and torch.equal(a.nan_to_num(), b.nan_to_num())
            )


def _cython_entry_active() -> bool:
    """Whether ft.ppo_loss's eager fast path runs through fastlmrl._cython.torch_entry (the
    Cython backend is active and the entry point built)."""
    from fastlmrl.torch import _tensors as tt
    from fastlmrl.torch import policy_losses as pl

    return pl._entry is not None and tt.kernels() is pl._cython_kernels


def _ppo_fast_cases():
    """Calls of ft.ppo_loss that take the eager fast path (plain contiguous 2-D float32/64
    logits, token-level ratios) and calls that must not (each needs a conversion or the
    general path's handling); (kwargs builder, fast?)."""

    def case(dtype=F64, n=6, v=7, seed=30, **changes):
        x, t, per = rng_tensors(n=n, v=v, dtype=dtype, seed=seed)
        kw = dict(
            logits=x, tokens=t, old_log_probs=per["old"], advantages=per["adv"], weights=per["w"]
        )
        kw.update({k: (fn(kw, per) if callable(fn) else fn) for k, fn in changes.items()})
        return kw

    return [
        (lambda: case(), True),
        (lambda: case(F32, clip_high=0.28, dual_clip=3.0), True),
        (
            lambda: case(
                weights=None,
                ref_log_probs=lambda kw, per: per["ref"],
                kl_coef=0.1,
                kl_estimator="k2",
            ),
            True,
        ),
        (lambda: case(F32, tokens=lambda kw, per: kw["tokens"].int()), True),
        (lambda: case(n=0), True),
        (lambda: case(tokens=lambda kw, per: kw["tokens"].to(torch.int16)), False),
        (lambda: case(logits=lambda kw, per: kw["logits"].t().contiguous().t()), False),
        (lambda: case(advantages=lambda kw, per: kw["advantages"].float()), False),
        (lambda: case(BF16), False),
        (
            lambda: case(
                logits=lambda kw, per: kw["logits"].reshape(2, 3, 7),
                tokens=lambda kw, per: kw["tokens"].reshape(2, 3),
            ),
            True,  # (per-row arguments of the batch shape or flat)
        ),
        (
            lambda: case(
                logits=lambda kw, per: kw["logits"].reshape(3, 2, 7),
                tokens=lambda kw, per: kw["tokens"].reshape(2, 3).t(),  # (a strided view)
            ),
            False,
        ),
        (  # .numpy() refuses a tensor that requires a gradient; the Cython entry reads it
            lambda: case(
                old_log_probs=lambda kw, per: (
                    per["old"][::1].expand(6)[:6].clone().requires_grad_(True)
                )
            ),
            "entry",
        ),
        (lambda: case(ratio_level="sequence", sequence_offsets=torch.tensor([0, 2, 6])), False),
    ]


@pytest.mark.parametrize("i", range(len(_ppo_fast_cases())))
@pytest.mark.parametrize("grad", [False, True])
def test_ppo_eager_fast_path_equals_the_custom_op(i, grad):
    """ft.ppo_loss in eager mode skips the dispatcher and the custom op (kernel on NumPy views,
    result tensors built when read): every field and the gradient equal the registered op's bit
    for bit, and only eligible calls take it (its autograd node is fastlmrl_ppo_loss_fast)."""
    make, fast = _ppo_fast_cases()[i]
    if fast == "entry":  # fast through the Cython entry point only
        fast = _cython_entry_active()
    kw = make()
    x = kw["logits"].detach().clone().requires_grad_(grad)
    res = ft.ppo_loss(**dict(kw, logits=x))
    x2 = kw["logits"].detach().clone().requires_grad_(grad)
    flat = x2.reshape(-1, x2.shape[-1])
    n = flat.shape[0]
    dt = x2.dtype if x2.dtype != BF16 else F32

    def vec(name, dtype=dt):
        value = kw.get(name)
        return None if value is None else value.detach().reshape(n).to(dtype)

    out = torch.ops.fastlmrl.ppo_loss(
        flat,
        kw["tokens"].reshape(n).long(),
        vec("old_log_probs"),
        vec("advantages"),
        vec("weights"),
        kw.get("clip_low", 0.2),
        kw.get("clip_high"),
        kw.get("dual_clip"),
        kw.get("ratio_level", "token"),
        kw.get("sequence_offsets"),
        vec("ref_log_probs"),
        kw.get("kl_coef", 0.0),
        kw.get("kl_estimator", "k3"),
    )
    want = [out[0], *(t.reshape(x2.shape[:-1]) for t in out[2:5]), *out[5].unbind()]
    assert len(res) == len(want) == len(res._fields) == 10
    for name, a, b in zip(res._fields, res, want):
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a.detach(), b.detach()), name
    if grad:
        assert res.loss.requires_grad
        assert (type(res.loss.grad_fn).__name__ == "fastlmrl_ppo_loss_fastBackward") == fast
        up = torch.tensor(0.75, dtype=res.loss.dtype)
        (g,) = torch.autograd.grad(res.loss, x, up)
        (g2,) = torch.autograd.grad(out[0], x2, up)
        assert torch.equal(g, g2)
    else:
        assert not res.loss.requires_grad and res.loss.grad_fn is None


def test_ppo_result_is_built_lazily_with_a_namedtuple_interface():
    x, t, per = rng_tensors(n=5, v=6, dtype=F32, seed=31)
    res = ft.ppo_loss(x, t, per["old"], per["adv"], per["w"], clip_high=0.3)
    assert res._values[1:] == [None] * 9  # only the loss is built by the fast path
    assert res.clip_fraction is res.clip_fraction and res[6] is res.clip_fraction
    assert res.log_probs.shape == (5,) and res.log_probs.dtype == F64
    d = res._asdict()
    assert list(d) == list(res._fields) and all(isinstance(v, torch.Tensor) for v in d.values())
    loss, log_probs, *rest = res
    assert loss is res.loss and log_probs is res.log_probs and len(rest) == 8
    assert res[-1] is res.approx_kl_k3 and res[1:3] == (res.log_probs, res.token_loss)
    other = res._replace(loss=res.loss * 2)
    assert torch.equal(other.loss, res.loss * 2) and other.ratios is res.ratios
    assert "clip_fraction=tensor(" in repr(res)
    with pytest.raises(ValueError, match="unexpected field"):
        res._replace(los=1)
    with pytest.raises(AttributeError):
        res.loss = None
    torch.testing.assert_close(
        res.log_probs, torch_logp(x.double(), t).float().double(), rtol=1e-6, atol=1e-6
    )


def test_ppo_fast_path_calls_the_active_backend(monkeypatch):
    """The fast path calls the kernel of the backend in use (use_backend, this thread)."""
    from fastlmrl import _backend

    x, t, per = rng_tensors(n=3, v=4, seed=33)
    calls = []
    module = _backend.backend_module("python")
    kernel = module.ppo_loss

    def spy(*args):
        calls.append(len(args))
        return kernel(*args)

    monkeypatch.setattr(module, "ppo_loss", spy)
    want = ft.ppo_loss(x, t, per["old"], per["adv"])
    assert calls == []
    with fastlmrl.use_backend("python"):
        got = ft.ppo_loss(x, t, per["old"], per["adv"])
    assert len(calls) == 1
    assert type(got) is ft.PPOLossResult and got._values[1] is None  # (the fast path)
    for a, b in zip(got, want):
        assert torch.equal(a, b)


class _MutableReal(float):
    """A float subclass whose value can change between calls (an option the fast path must not
    remember by identity)."""


def test_ppo_fast_path_options_follow_every_call():
    """The fast path remembers the last call's options by the identity of plain float / str
    arguments: a sequence of calls with changing, repeated, equal-but-distinct, bad and subclass
    options gives, call by call, the NumPy API's results (or its error)."""
    x, t, per = rng_tensors(n=5, v=6, seed=34)
    xn, tn, old, adv = x.numpy(), t.numpy(), per["old"].numpy(), per["adv"].numpy()
    ref = per["ref"].numpy()
    low, high = 0.2, 0.25
    calls = [
        dict(clip_low=low),
        dict(clip_low=low),
        dict(clip_low=float("0.1")),
        dict(clip_low=low, clip_high=high),
        dict(clip_low=low, clip_high=high, dual_clip=3.0),
        dict(clip_low=low, ref=True, kl_coef=0.5),
        dict(clip_low=low, ref=True, kl_coef=0.5, kl_estimator="k1"),
        dict(clip_low=-1.0),
        dict(clip_low=low, kl_estimator="k9"),
        dict(clip_low=low),
        dict(clip_low=_MutableReal(0.3)),
        dict(clip_low=1),
        dict(clip_low=low),
    ]
    for kw in calls:
        has_ref = kw.pop("ref", False)
        try:
            want = fastlmrl.ppo_loss(xn, tn, old, adv, ref_log_probs=ref if has_ref else None, **kw)
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc)[:30])):
                ft.ppo_loss(
                    x,
                    t,
                    per["old"],
                    per["adv"],
                    ref_log_probs=per["ref"] if has_ref else None,
                    **kw,
                )
            continue
        got = ft.ppo_loss(
            x, t, per["old"], per["adv"], ref_log_probs=per["ref"] if has_ref else None, **kw
        )
        assert got._values[1] is None, kw  # (the fast path)
        assert got.loss.item() == want.loss, kw
        np.testing.assert_array_equal(got.ratios.numpy(), want.ratios)
        assert got.clip_fraction.item() == want.clip_fraction, kw
        assert got.kl_loss.item() == want.kl_loss, kw


def test_ppo_fast_path_leaves_unconvertible_arguments_to_the_general_path():
    """Arguments that Tensor.numpy() refuses (a conjugate or negative view, meta tensors) get the
    general path's result or error, never a raw conversion error of the fast path."""
    x, t, per = rng_tensors(n=4, v=5, seed=35)
    neg = torch._neg_view(per["adv"])
    assert neg.is_neg()
    got = ft.ppo_loss(x, t, per["old"], neg)
    want = ft.ppo_loss(x, t, per["old"], -per["adv"])
    assert got._values[1] is not None  # (the general path)
    for a, b in zip(got, want):
        assert torch.equal(a, b)
    with pytest.raises(
        (ValueError, TypeError, RuntimeError, NotImplementedError), match="meta|device|cpu|CPU"
    ):
        ft.ppo_loss(x, t.to("meta"), per["old"], per["adv"])


def test_ppo_fast_path_backward_with_retained_graph_and_accumulation():
    x, t, per = rng_tensors(n=4, v=5, dtype=F32, seed=32)
    x.requires_grad_(True)
    res = ft.ppo_loss(x, t, per["old"], per["adv"])
    assert type(res.loss.grad_fn).__name__ == "fastlmrl_ppo_loss_fastBackward"
    res.loss.backward(retain_graph=True)
    once = x.grad.clone()
    res.loss.backward()
    torch.testing.assert_close(x.grad, 2 * once, rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="second time"):
        res.loss.backward()
    x.grad = None
    want = torch.autograd.grad(torch_ppo(x, t, per["old"], per["adv"], torch.full((4,), 0.25)), x)[
        0
    ]
    ft.ppo_loss(x, t, per["old"], per["adv"]).loss.backward()
    torch.testing.assert_close(x.grad, want, rtol=1e-5, atol=1e-6)


def test_torch_compile_fullgraph():
    x, t, per = rng_tensors(batch=(2, 3), v=7, dtype=F32, seed=13)
    hidden, weight, _, _ = head_tensors(n=6, h=4, v=7, dtype=F32)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    x.requires_grad_(True)

    def step(x, hidden, weight):
        w = ft.loss_weights(mask, "grpo", dtype=torch.float32)
        res = ft.ppo_loss(x * 1.5, t, per["old"], per["adv"], w, clip_high=0.28)
        head = ft.linear_ppo_loss(
            hidden.reshape(2, 3, 4), weight, t, per["old"], per["adv"], w, chunk_size=4
        )
        return (
            res.loss
            + head.loss
            + ft.token_log_probs(x, t).sum()
            + ft.entropy(x).mean()
            + ft.logsumexp(x).mean()
            + res.clip_fraction
        )

    compiled = torch.compile(step, fullgraph=True)
    got = compiled(x, hidden, weight)
    want = step(x, hidden, weight)
    torch.testing.assert_close(got, want)
    for a, b in zip(
        torch.autograd.grad(got, (x, hidden, weight)),
        torch.autograd.grad(want, (x, hidden, weight)),
    ):
        torch.testing.assert_close(a, b)


# --- bad input ------------------------------------------------------------------------------------


def bad_calls():
    x, t, per = rng_tensors(n=4, v=5, seed=14)
    o, a = per["old"], per["adv"]
    nan_old = o.clone()
    nan_old[2] = float("nan")
    neg_w = per["w"].clone()
    neg_w[1] = -0.1
    hidden, weight, bias, tokens = head_tensors(n=4, v=5)
    return x, [
        (ValueError, "device 'meta'", lambda: ft.ppo_loss(x.to("meta"), t, o, a)),
        (ValueError, "old_log_probs is on device", lambda: ft.ppo_loss(x, t, o.to("meta"), a)),
        (TypeError, "logits must have dtype", lambda: ft.entropy(x.to(torch.int64))),
        (TypeError, "logits must have dtype", lambda: ft.ppo_loss(x.half(), t, o, a)),
        (TypeError, "tokens must hold integer ids", lambda: ft.token_log_probs(x, t.double())),
        (ValueError, "tokens must have shape", lambda: ft.token_log_probs(x, t[:3])),
        (ValueError, "advantages must have shape", lambda: ft.ppo_loss(x, t, o, a[:3])),
        (ValueError, "advantages must have shape", lambda: ft.ppo_loss(x, t, o, a[0])),
        (ValueError, "at least one column", lambda: ft.ppo_loss(x[:, :0], t, o, a)),
        (
            ValueError,
            r"tokens\[1\] = 9 is out of range",
            lambda: ft.ppo_loss(x, torch.tensor([0, 9, 1, 2]), o, a),
        ),
        (
            ValueError,
            r"tokens\[1\] = -1 is out of range",
            lambda: ft.token_log_probs(x, torch.tensor([0, -1, 1, 2])),
        ),
        (
            ValueError,
            r"old_log_probs\[2\] = nan is not finite",
            lambda: ft.ppo_loss(x, t, nan_old, a),
        ),
        (ValueError, r"weights\[1\] = -0.1 is negative", lambda: ft.ppo_loss(x, t, o, a, neg_w)),
        (ValueError, "kl_coef > 0 needs ref_log_probs", lambda: ft.ppo_loss(x, t, o, a, beta=0.1)),
        (
            ValueError,
            "sequence_offsets",
            lambda: ft.ppo_loss(
                x, t, o, a, ratio_level="sequence", sequence_offsets=torch.tensor([0, 3])
            ),
        ),
        (ValueError, "kl_estimator", lambda: ft.ppo_loss(x, t, o, a, kl_estimator="k4")),
        (
            TypeError,
            "clip_low must be a Python number",
            lambda: ft.ppo_loss(x, t, o, a, clip_low=torch.tensor(0.2)),
        ),
        (
            ValueError,
            "weight must have shape",
            lambda: ft.linear_ppo_loss(hidden, weight[:, :3], tokens, o, a),
        ),
        (
            TypeError,
            "weight must have the dtype",
            lambda: ft.linear_token_log_probs(hidden, weight.float(), tokens),
        ),
        (
            ValueError,
            r"tokens\[3\] = 5 is out of range",
            lambda: ft.linear_token_log_probs(hidden, weight, torch.tensor([0, 1, 2, 5])),
        ),
        (
            ValueError,
            r"old_log_probs\[2\] = nan is not finite",
            lambda: ft.linear_ppo_loss(hidden, weight, tokens, nan_old, a, chunk_size=1),
        ),
        (
            ValueError,
            "chunk_size must be >= 1",
            lambda: ft.linear_ppo_loss(hidden, weight, tokens, o, a, chunk_size=0),
        ),
        (
            ValueError,
            r"returns\[2\] = nan is not finite",
            lambda: ft.linear_reinforce_loss(hidden, weight, tokens, nan_old, chunk_size=1),
        ),
        (
            ValueError,
            r"weights\[1\] = -0.1 is negative",
            lambda: ft.linear_reinforce_loss(hidden, weight, tokens, a, neg_w),
        ),
        (
            ValueError,
            r"tokens\[3\] = 5 is out of range",
            lambda: ft.linear_reinforce_loss(hidden, weight, torch.tensor([0, 1, 2, 5]), a),
        ),
        (
            ValueError,
            "baseline must be None, 'mean'",
            lambda: ft.linear_reinforce_loss(hidden, weight, tokens, a, baseline="median"),
        ),
        (
            ValueError,
            "bias is on device",
            lambda: ft.linear_token_log_probs(hidden, weight, tokens, bias.to("meta")),
        ),
        (TypeError, "mask must be a bool", lambda: ft.loss_weights(x, "grpo")),
        (
            ValueError,
            "baseline must be None, 'mean'",
            lambda: ft.reinforce_loss(x, t, per["ret"], baseline="median"),
        ),
        (
            ValueError,
            "estimator must be one of",
            lambda: ft.kl_penalty_loss(x, t, per["ref"], kl_estimator="k5"),
        ),
        (
            ValueError,
            "value_clip needs old_values",
            lambda: ft.a2c_loss(x, t, a, per["val"], per["ret"], value_clip=0.2),
        ),
    ]


@pytest.mark.parametrize("i", range(len(bad_calls()[1])))
def test_bad_input_raises_naming_the_argument_and_writes_nothing(i):
    x, calls = bad_calls()
    x.requires_grad_(True)
    before = x.detach().clone()
    exc, match, call = calls[i]
    with pytest.raises(exc, match=match):
        call()
    assert torch.equal(x.detach(), before) and x.grad is None


def test_nan_logits_are_reported():
    x, t, per = rng_tensors(n=4, v=5, seed=15)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="logits row 2"):
        ft.ppo_loss(x, t, per["old"], per["adv"])
    with pytest.raises(ValueError, match="logits row 2"):
        ft.entropy(x)
    # the fused LM head: the kernel's status on a chunk becomes the NumPy API's error for the
    # chunk's logits computed again (the kernel wrote its gradient over the first copy)
    hidden, weight, _, tokens = head_tensors(n=10)
    hidden = hidden.detach().clone().requires_grad_(True)
    with torch.no_grad():
        hidden[7, 0] = float("nan")
    _, _, per = rng_tensors(n=10, v=7, seed=16)
    with pytest.raises(ValueError, match=r"rows 6:9 .*logits row 1 holds NaN"):
        ft.linear_ppo_loss(hidden, weight, tokens, per["old"], per["adv"], chunk_size=3)
    with pytest.raises(ValueError, match=r"rows 6:9 .*logits row 1 holds NaN"):
        ft.linear_token_log_probs(hidden, weight, tokens, chunk_size=3)
    with pytest.raises(ValueError, match=r"rows 6:9 .*logits row 1 holds NaN"):
        ft.linear_reinforce_loss(hidden, weight, tokens, per["adv"], chunk_size=3)
    with pytest.raises(ValueError, match=r"logits row 1 holds NaN"):
        torch.ops.fastlmrl.linear_token_log_probs_backward(
            hidden.detach(),
            weight.detach(),
            tokens,
            None,
            torch.ones(10, dtype=F64),
            3,
            True,
            True,
            False,
            torch.empty(0, 7, dtype=F64),
        )


def test_backward_hands_over_the_forward_gradient_without_copy():
    """loss.backward() (upstream 1, graph freed): the leaf's .grad is the very tensor the fused
    kernel wrote in the forward pass; a scaled upstream gives a new, scaled tensor."""
    x, t, per = rng_tensors(n=5, v=6, dtype=F32, seed=16)
    x.requires_grad_(True)
    out = torch.ops.fastlmrl.ppo_loss(
        x, t, per["old"], per["adv"], None, 0.2, None, None, "token", None, None, 0.0, "k3"
    )
    loss, grad = out[0], out[1]
    ptr, expected = grad.data_ptr(), grad.clone()
    del out, grad
    loss.backward()
    assert x.grad.data_ptr() == ptr and torch.equal(x.grad, expected)
    x.grad = None
    (loss2,) = torch.ops.fastlmrl.ppo_loss(
        x, t, per["old"], per["adv"], None, 0.2, None, None, "token", None, None, 0.0, "k3"
    )[:1]
    (loss2 * 0.5).backward()
    torch.testing.assert_close(x.grad, expected * 0.5, rtol=0, atol=0)


def test_ci_runs_the_readme_test_command_with_the_cpu_torch_build():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split("## Run the tests", 1)[1]
    command = section.split("```bash\n", 1)[1].split("\n", 1)[0].strip()
    assert command.startswith("pip install torch==") and command.endswith("&& pytest")
    ci_lines = [
        line.strip()
        for line in (root / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("pip install")
    ]
    assert ci_lines == [command]


def test_linear_ppo_loss_accepts_trl_spellings():
    hidden, weight, _, tokens = head_tensors(n=6)
    _, _, per = rng_tensors(n=6, v=7, seed=17)
    a = ft.linear_ppo_loss(
        hidden,
        weight,
        tokens,
        per["old"],
        per["adv"],
        epsilon=0.1,
        epsilon_high=0.3,
        beta=0.05,
        ref_log_probs=per["ref"],
    )
    b = ft.linear_ppo_loss(
        hidden,
        weight,
        tokens,
        per["old"],
        per["adv"],
        clip_low=0.1,
        clip_high=0.3,
        kl_coef=0.05,
        ref_log_probs=per["ref"],
    )
    assert a.loss.item() == b.loss.item()


def test_buffer_cache_reuses_only_buffers_no_tensor_holds():
    from fastlmrl.torch import _tensors as tt

    shape = (1024, 4096)  # 16 MiB of float32: cached
    a = tt.empty(shape, F32)
    ptr = a.data_ptr()
    b = tt.empty(shape, F32)
    assert b.data_ptr() != ptr  # a is alive
    del a
    c = tt.empty((4096, 1024), F32)  # same size, other shape
    assert c.data_ptr() == ptr
    view = c[1:].reshape(-1)
    del c
    assert tt.empty(shape, F32).data_ptr() != ptr  # a view keeps the storage alive
    arr = view.numpy()
    del view
    assert tt.empty(shape, F32).data_ptr() != ptr  # so does a NumPy view of it
    del arr
    assert tt.empty(shape, F32).data_ptr() == ptr
    del b
    ft.set_buffer_cache(0)
    try:
        assert not tt._cache.entries
        assert tt.empty(shape, F32).data_ptr() is not None and not tt._cache.entries
    finally:
        ft.set_buffer_cache(4 << 30)
    with pytest.raises(ValueError, match="max_bytes"):
        ft.set_buffer_cache(-1)
    ft.empty_cache()


def test_readme_from_pytorch_example_runs(capsys):
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = readme.split("## From PyTorch", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "README.md (From PyTorch)", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    unfused = float(out[0].split()[1])
    fused = float(out[1].split()[-1])
    assert unfused == pytest.approx(fused, rel=1e-5)


def test_ppo_statistics_follow_the_kernel_contract():
    """The op returns the kernel's statistics slots after the loss in PPOLossResult's field order
    (read by the contract's names, not by position), and the Cython entry point was built for the
    contract's number of slots."""
    from fastlmrl.torch import policy_losses as tpl

    slots = tpl.PPO_STATS_SLOTS
    assert slots == fastlmrl.policy_losses.CONTRACT["ppo_loss"].results["stats"]
    assert slots[tpl._PPO_LOSS_SLOT] == "loss"
    assert slots[tpl._PPO_DIAGNOSTICS] == tpl.PPOLossResult._fields[4:]
    if tpl._entry is not None:
        assert tpl._entry.STATS_SLOTS == len(slots)


# --- the row ops' NumPy-view fast path (backends without the Cython entry point) --------------


@pytest.mark.parametrize("backend_name", ["numba", "python"])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", ["token_log_probs", "entropy", "logsumexp"])
def test_row_ops_numpy_view_path_equals_the_custom_op(monkeypatch, backend_name, dtype, name):
    """Under a backend without the Cython entry point, plain contiguous (N, V) tensors take the
    kernel on NumPy views (``_row_fast``), (2, 3, V) logits too: values and gradients equal
    the registered custom op's bit for bit; anything else (non-contiguous, bfloat16, a
    Parameter, a kernel status) the general path."""
    from fastlmrl.torch import log_probs as tlp

    real, seen = tlp._row_fast, []

    def spy(*args):
        out = real(*args)
        seen.append(out is not None)
        return out

    monkeypatch.setattr(tlp, "_row_fast", spy)
    public = getattr(ft, name)
    custom = getattr(torch.ops.fastlmrl, name)
    x0, t, _ = rng_tensors(n=5, v=9, dtype=dtype, seed=31)
    t32 = t.to(torch.int32)

    def call(f, x, ids):
        return f(x, ids) if name == "token_log_probs" else f(x)

    with fastlmrl.use_backend(backend_name):
        for ids in (t, t32):
            x, x2 = x0.clone().requires_grad_(True), x0.clone().requires_grad_(True)
            got, want = call(public, x, ids), call(custom, x2, ids.long())
            assert type(got.grad_fn).__name__ == f"fastlmrl_{name}_fastBackward"
            assert got.dtype == want.dtype and torch.equal(got, want)
            up = torch.linspace(0.5, 1.5, 5, dtype=dtype)
            (g,), (g2,) = torch.autograd.grad(got, x, up), torch.autograd.grad(want, x2, up)
            assert torch.equal(g, g2)
            assert torch.equal(call(public, x0, ids), want.detach())
        assert seen == [True] * 4
        # (2, 3, V) logits, ids of the batch shape and flat: (N, V) views, results and
        # gradients in the batch / logits' shape
        x3, t3, _ = rng_tensors(v=9, dtype=dtype, seed=34, batch=(2, 3))
        for ids in (t3, t3.reshape(6)):
            seen.clear()
            x, x2 = x3.clone().requires_grad_(True), x3.clone().requires_grad_(True)
            got = call(public, x, ids)
            want = call(custom, x2.reshape(6, 9), ids.reshape(6)).reshape(2, 3)
            assert seen == [True] and type(got.grad_fn).__name__ == f"fastlmrl_{name}_fastBackward"
            assert got.shape == (2, 3) and torch.equal(got, want)
            up = torch.linspace(0.5, 1.5, 6, dtype=dtype).reshape(2, 3)
            (g,), (g2,) = torch.autograd.grad(got, x, up), torch.autograd.grad(want, x2, up)
            assert g.shape == (2, 3, 9) and torch.equal(g, g2)
        seen.clear()
        bad = x0.clone()
        bad[2, 1] = float("nan")
        others = [
            x0.t().contiguous().t(),  # non-contiguous
            x0.to(torch.bfloat16),
            torch.nn.Parameter(x0.clone()),
            torch._neg_view(x0),
        ]
        for x in others:
            want = call(custom, x.detach().resolve_neg().contiguous(), t)
            got = call(public, x, t[: x.shape[0]])
            assert torch.equal(got.detach(), want)
        assert True not in seen
        seen.clear()
        with pytest.raises(ValueError, match="logits"):
            call(public, bad, t)
        assert seen == [False]  # (the kernel's status: the general path raised)


_LOSS_FAST = {
    "reinforce_loss": (
        "_reinforce_fast",
        lambda x, t, p: ft.reinforce_loss(x, t, p["ret"], p["w"], baseline=p["val"]),
    ),
    "kl_penalty_loss": (
        "_kl_fast",
        lambda x, t, p: ft.kl_penalty_loss(x, t, p["ref"], p["w"], kl_estimator="k2"),
    ),
    "a2c_loss": (
        "_a2c_fast",
        lambda x, t, p: ft.a2c_loss(
            x, t, p["adv"], p["val"], p["ret"], p["w"], old_values=p["old"], value_clip=0.3
        ),
    ),
}


@pytest.mark.parametrize("backend_name", ["numba", "python"])
@pytest.mark.parametrize("dtype", [F32, F64])
@pytest.mark.parametrize("name", list(_LOSS_FAST))
def test_losses_numpy_view_path_equals_the_general_path(monkeypatch, backend_name, dtype, name):
    """Under a backend without the Cython entry point, REINFORCE / KL / A2C on plain contiguous
    tensors take the kernel on NumPy views: every field and the gradients (logits, and values
    for A2C) equal the general path's bit for bit; other tensors and kernel statuses take the
    general path (its error)."""
    from fastlmrl.torch import policy_losses as tpl

    attr, call = _LOSS_FAST[name]
    real, seen = getattr(tpl, attr), []

    def spy(*args):
        out = real(*args)
        seen.append(out is not None)
        return out

    def run(fast, x, t, p):
        monkeypatch.setattr(tpl, attr, spy if fast else (lambda *args: None))
        x = x.clone().requires_grad_(True)
        p = dict(p, val=p["val"].clone().requires_grad_(name == "a2c_loss"))
        res = call(x, t, p)
        leaves = (x, p["val"]) if name == "a2c_loss" else (x,)
        up = torch.tensor(0.625, dtype=dtype)
        return res, torch.autograd.grad(res.loss, leaves, up)

    x, t, per = rng_tensors(n=5, v=9, dtype=dtype, seed=32)
    per["w"] = per["w"].abs()
    with fastlmrl.use_backend(backend_name):
        got, grads = run(True, x, t, per)
        want, want_grads = run(False, x, t, per)
        assert seen == [True]
        assert type(got.loss.grad_fn).__name__ == f"fastlmrl_{name}_fastBackward"
        assert type(got) is type(want) and got._values[1] is None
        for a, b in zip((*got, *grads), (*want, *want_grads)):
            assert a.dtype == b.dtype and torch.equal(a, b)
        # (2, 3, V) logits, per-row arguments of the batch shape and flat: NumPy views too
        x3, t3, per3 = rng_tensors(v=9, dtype=dtype, seed=33, batch=(2, 3))
        per3["w"] = per3["w"].abs()
        for p3 in (per3, {k: v.reshape(6) for k, v in per3.items()}):
            seen.clear()
            got, grads = run(True, x3, t3, p3)
            want, want_grads = run(False, x3, t3, p3)
            assert seen == [True] and got.log_probs.shape == (2, 3)
            for a, b in zip((*got, *grads), (*want, *want_grads)):
                assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        seen.clear()
        strided = x3.transpose(0, 1).contiguous().transpose(0, 1)  # (a (2, 3, 9) strided view)
        for other, tokens in (
            (x.t().contiguous().t(), t),
            (x.to(torch.bfloat16), t),
            (strided, t3),
        ):
            p_other = per if other.ndim == 2 else per3
            got, _ = run(True, other, tokens, p_other)
            want, _ = run(False, other, tokens, p_other)
            assert torch.equal(got.loss, want.loss)
        assert True not in seen
        bad = t.clone()
        bad[1] = 99
        seen.clear()
        with pytest.raises(ValueError, match="tokens") as error:
            run(True, x, bad, per)
        assert seen == [False]
        with pytest.raises(ValueError) as want_error:
            run(False, x, bad, per)
        assert str(error.value) == str(want_error.value)


#: op -> (module, its NumPy-view path, call(x, t, per)) for logits with batch dimensions
_BATCHED_NUMPY_VIEW = {
    "ppo_loss": (
        "policy_losses",
        "_ppo_fast",
        lambda x, t, p: ft.ppo_loss(
            x, t, p["old"], p["adv"], p["w"], ref_log_probs=p["ref"], kl_coef=0.1
        ),
    ),
    "reinforce_loss": ("policy_losses", "_reinforce_fast", _LOSS_FAST["reinforce_loss"][1]),
    "kl_penalty_loss": ("policy_losses", "_kl_fast", _LOSS_FAST["kl_penalty_loss"][1]),
    "a2c_loss": ("policy_losses", "_a2c_fast", _LOSS_FAST["a2c_loss"][1]),
    "token_log_probs": ("log_probs", "_row_fast", lambda x, t, p: ft.token_log_probs(x, t)),
    "entropy": ("log_probs", "_row_fast", lambda x, t, p: ft.entropy(x)),
    "logsumexp": ("log_probs", "_row_fast", lambda x, t, p: ft.logsumexp(x)),
    "sample_tokens": ("sampling", "_sample_fast", lambda x, t, p: ft.sample_tokens(x, 3, top_k=4)),
}


@pytest.mark.parametrize("backend_name", ["numba", "python"])
@pytest.mark.parametrize("batch", [(2, 3), (2, 1, 2), (2, 0)], ids=str)
@pytest.mark.parametrize("name", list(_BATCHED_NUMPY_VIEW))
def test_numpy_view_paths_take_logits_with_batch_dimensions(monkeypatch, backend_name, batch, name):
    """Under a backend without the Cython entry point, (..., V) logits of rank 3 and 4 (and a
    zero-size batch dimension) with per-row arguments of the batch shape take the NumPy-view
    path: every result equals the general path's, in the batch shape."""
    import importlib

    module, attr, call = _BATCHED_NUMPY_VIEW[name]
    target = importlib.import_module(f"fastlmrl.torch.{module}")
    real, seen = getattr(target, attr), []

    def spy(*args):
        out = real(*args)
        seen.append(out is not None)
        return out

    x, t, per = rng_tensors(v=7, dtype=F64, seed=35, batch=batch)
    per["w"] = per["w"].abs()
    with fastlmrl.use_backend(backend_name):
        monkeypatch.setattr(target, attr, spy)
        got = call(x, t, per)
        monkeypatch.setattr(target, attr, lambda *args: None)
        want = call(x, t, per)
    assert seen == [True]
    got, want = ([r] if isinstance(r, torch.Tensor) else list(r) for r in (got, want))
    assert len(got) == len(want)
    assert got[1 if name.endswith("_loss") else 0].shape == batch  # (a loss: 0 is the loss)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
