"""fastlmrl.torch.sample_tokens: the custom op (opcheck, fake tensors), equality with the NumPy
API, batch shapes, bfloat16, non-contiguous input, RandomStream, bad input."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import fastlmrl  # noqa: E402
from fastlmrl import RandomStream  # noqa: E402
from fastlmrl.torch.sampling import sample_tokens  # noqa: E402

SETTINGS = [
    dict(),
    dict(temperature=0.7, top_k=20, top_p=0.9, min_p=0.02),
    dict(temperature=0.0),
    dict(top_p=0.5),
]


def _logits(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)


@pytest.mark.parametrize("kwargs", SETTINGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equals_the_numpy_api(backend, kwargs, dtype):
    x = _logits((6, 5, 300), dtype)
    got = sample_tokens(x, 11, **kwargs)
    expected = fastlmrl.sample_tokens(x.reshape(30, 300).numpy(), 11, **kwargs)
    assert got.tokens.shape == (6, 5) and got.tokens.dtype == torch.int64
    for g, e in zip(got, expected):
        assert g.dtype == torch.from_numpy(e).dtype
        assert g.reshape(-1).numpy().tobytes() == e.tobytes()


def test_bfloat16_is_sampled_in_float32():
    x = _logits((40, 100), torch.bfloat16)
    got = sample_tokens(x, 3, top_k=10, top_p=0.8)
    expected = fastlmrl.sample_tokens(x.float().numpy(), 3, top_k=10, top_p=0.8)
    assert got.log_probs.dtype == torch.float32 and got.model_log_probs.dtype == torch.float32
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g.numpy(), e)


def test_non_contiguous_and_expanded_inputs():
    base = _logits((8, 64))
    for x in (base.t().contiguous().t(), base[:, ::2], base[:1].expand(8, 64)):
        got = sample_tokens(x, 5, temperature=0.9)
        expected = fastlmrl.sample_tokens(np.ascontiguousarray(x.numpy()), 5, temperature=0.9)
        for g, e in zip(got, expected):
            np.testing.assert_array_equal(g.numpy(), e)


def test_logits_requiring_grad_are_accepted():
    x = _logits((4, 10)).requires_grad_()
    got = sample_tokens(x, 1)
    assert not got.log_probs.requires_grad


def test_random_stream_is_advanced_and_reproducible():
    x = _logits((2, 3, 50))
    s = RandomStream(7, stream=3, counter=2**63 + 5)  # counters above 2**63: int64 bits in the op
    a = sample_tokens(x, s)
    assert s.counter == 2**63 + 11
    b = fastlmrl.sample_tokens(
        x.reshape(6, 50).numpy(), RandomStream(7, stream=3, counter=2**63 + 5)
    )
    np.testing.assert_array_equal(a.tokens.reshape(-1).numpy(), b.tokens)
    c = sample_tokens(x, 2**64 - 1)  # an int seed above 2**63
    d = fastlmrl.sample_tokens(x.reshape(6, 50).numpy(), 2**64 - 1)
    np.testing.assert_array_equal(c.tokens.reshape(-1).numpy(), d.tokens)


def test_exhausted_stream_raises_naming_seed():
    s = RandomStream(1, counter=2**64 - 1)
    with pytest.raises(ValueError, match="seed"):
        sample_tokens(_logits((2, 5)), s)
    assert s.counter == 2**64 - 1


def test_opcheck():
    op = torch.ops.fastlmrl.sample_tokens.default
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = _logits((7, 33), dtype)
        for args in (
            (1, 0, 1.0, 0, 1.0, 0.0),
            (-3, -(2**62), 0.6, 5, 0.8, 0.1),
            (4, 9, 0.0, 0, 1.0, 0.0),
        ):
            torch.library.opcheck(op, (x, *args))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.empty(9, 17, dtype=torch.bfloat16)
        tokens, lp, mlp = torch.ops.fastlmrl.sample_tokens(x, 0, 0, 1.0, 0, 1.0, 0.0)
        assert tokens.shape == (9,) and tokens.dtype == torch.int64
        assert lp.dtype == torch.float32 and mlp.shape == (9,)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: sample_tokens(torch.zeros(2, 3, device="meta"), 0), ValueError, "device 'meta'"),
        (lambda: sample_tokens(np.zeros((2, 3)), 0), TypeError, "torch.Tensor"),
        (lambda: sample_tokens(torch.zeros(2, 3, dtype=torch.float16), 0), TypeError, "dtype"),
        (lambda: sample_tokens(torch.zeros(2, 0), 0), ValueError, "at least one column"),
        (lambda: sample_tokens(torch.zeros(()), 0), ValueError, "0-dimensional"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, temperature=-1.0), ValueError, "temperature"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, top_k=-2), ValueError, "top_k"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, top_p=0.0), ValueError, "top_p"),
        (lambda: sample_tokens(torch.zeros(2, 3), 0, min_p=2.0), ValueError, "min_p"),
        (lambda: sample_tokens(torch.zeros(2, 3), -1), ValueError, "seed"),
        (lambda: sample_tokens(torch.tensor([[0.0, float("nan")]]), 0), ValueError, "logits row 0"),
    ],
)
def test_bad_input(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_the_op_refuses_bad_arguments_before_writing():
    """Direct callers of torch.ops.fastlmrl.sample_tokens get the kernel's checks."""
    op = torch.ops.fastlmrl.sample_tokens
    x = _logits((3, 5))
    with pytest.raises(ValueError, match="temperature"):
        op(x, 1, 0, -1.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="top_k"):
        op(x, 1, 0, 1.0, -1, 1.0, 0.0)
    with pytest.raises(ValueError, match="top_p"):
        op(x, 1, 0, 1.0, 0, 0.0, 0.0)
    with pytest.raises(ValueError, match="min_p"):
        op(x, 1, 0, 1.0, 0, 1.0, 1.5)
    with pytest.raises(ValueError, match="logits row 1"):
        op(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]), 1, 0, 1.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="logits must be an .N, V."):
        op(torch.zeros(2, 3, 4), 1, 0, 1.0, 0, 1.0, 0.0)
    with pytest.raises(ValueError, match="logits must be an .N, V."):
        op(torch.zeros(2, 3, dtype=torch.float16), 1, 0, 1.0, 0, 1.0, 0.0)


def test_import_fastlmrl_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, fastlmrl; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_torch_compile_fullgraph():
    x = _logits((6, 40))
    op = torch.compile(
        lambda x: torch.ops.fastlmrl.sample_tokens(x, 1, 0, 0.7, 5, 0.9, 0.0), fullgraph=True
    )
    for a, b in zip(op(x), torch.ops.fastlmrl.sample_tokens(x, 1, 0, 0.7, 5, 0.9, 0.0)):
        assert torch.equal(a, b)
    wrapper = torch.compile(lambda x: sample_tokens(x, 1, temperature=0.7, top_k=5), fullgraph=True)
    for a, b in zip(wrapper(x), sample_tokens(x, 1, temperature=0.7, top_k=5)):
        assert torch.equal(a, b)
