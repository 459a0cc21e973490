"""NeuralPolicy and rollouts: KV cache vs full recompute, seeds, EOS / length limit, padding,
plain nn.Module models (logits tensor, no cache, no output layer)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fastlmrl.neural import build_model  # noqa: E402
from fastlmrl.neural.policy import NeuralPolicy, position_ids_from_mask  # noqa: E402
from fastlmrl.neural.rollout import generate  # noqa: E402
from fastlmrl.rng import RandomStream  # noqa: E402
from fastlmrl.tokenizers import CharTokenizer  # noqa: E402


def tiny_policy(architecture="gpt2", seed=0, value_head=False):
    tok = CharTokenizer("abcdefgh =+0123456789")
    model = build_model(
        tok.vocab_size,
        architecture=architecture,
        n_layer=2,
        n_embd=16,
        n_head=2,
        n_positions=64,
        seed=seed,
    )
    return NeuralPolicy(model, tok, value_head=value_head)


class PlainLM(torch.nn.Module):
    """A model that is not a transformers model: input_ids -> logits tensor, nothing else."""

    def __init__(self, vocab, width=8):
        super().__init__()
        torch.manual_seed(0)
        self.embed = torch.nn.Embedding(vocab, width)
        self.mix = torch.nn.Linear(width, width)
        self.out = torch.nn.Linear(width, vocab)

    def forward(self, input_ids):
        h = torch.tanh(self.mix(self.embed(input_ids).cumsum(1)))
        return self.out(h) * 3.0


PROMPTS = ["ab=", "abcdef=", "h="]


@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_cache_and_recompute_draw_the_same_tokens(architecture):
    policy = tiny_policy(architecture)
    assert policy.supports_cache
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS)
    cached = generate(policy, ids, mask, 7, max_new_tokens=10, use_cache=True)
    full = generate(policy, ids, mask, 7, max_new_tokens=10, use_cache=False)
    assert torch.equal(cached.completion_ids, full.completion_ids)
    assert torch.equal(cached.completion_mask, full.completion_mask)
    assert float((cached.log_probs - full.log_probs).abs().max()) < 1e-5
    # and the recorded log-probs are those of a full forward pass of the finished sequences
    with torch.no_grad():
        logits = policy(cached.input_ids(), cached.attention_mask()).logits
    p = ids.shape[1]
    lp = torch.log_softmax(logits[:, p - 1 : -1], -1).gather(2, cached.completion_ids[..., None])[
        ..., 0
    ]
    m = cached.completion_mask
    assert float((lp[m] - cached.log_probs[m]).abs().max()) < 1e-5


def test_seed_reproduces_and_stream_advances():
    policy = tiny_policy()
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS)
    s1, s2 = RandomStream(5), RandomStream(5)
    a = generate(policy, ids, mask, s1, max_new_tokens=6, temperature=0.8, top_k=5, top_p=0.9)
    b = generate(policy, ids, mask, s2, max_new_tokens=6, temperature=0.8, top_k=5, top_p=0.9)
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.log_probs, b.log_probs)
    steps = a.completion_ids.shape[1]
    assert s1.counter == s2.counter == steps * len(PROMPTS)  # B counters per step
    c = generate(policy, ids, mask, s1, max_new_tokens=6, temperature=0.8, top_k=5, top_p=0.9)
    assert not torch.equal(c.completion_ids, a.completion_ids)


def test_eos_terminates_and_length_limit_truncates():
    policy = tiny_policy()
    eos = policy.tokenizer.eos_token_id
    # make EOS likely from the start: shift the final norm's bias toward EOS's output row
    with torch.no_grad():
        policy.model.transformer.ln_f.bias.copy_(policy.model.lm_head.weight[eos] * 0.4)
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS * 4)
    r = generate(policy, ids, mask, 3, max_new_tokens=4)
    assert r.terminated.any() and r.truncated.any()
    assert torch.equal(r.terminated, ~r.truncated)
    for row, n, term in zip(r.completion_ids.tolist(), r.lengths.tolist(), r.terminated.tolist()):
        if term:
            assert row[n - 1] == eos and eos not in row[: n - 1]
            assert all(t == policy.tokenizer.pad_token_id for t in row[n:])
        else:
            assert n == r.completion_ids.shape[1] == 4 and eos not in row
    assert float(r.log_probs[~r.completion_mask].abs().max()) == 0.0


def test_left_padding_does_not_change_a_prompts_distribution():
    policy = tiny_policy()
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS)
    alone_ids, alone_mask = policy.tokenizer.encode_prompts([PROMPTS[0]])
    with torch.no_grad():
        padded = policy(ids, mask).logits[0, -1]
        alone = policy(alone_ids, alone_mask).logits[0, -1]
    assert float((padded - alone).abs().max()) < 1e-4
    assert position_ids_from_mask(torch.tensor([[0, 0, 1, 1]])).tolist() == [[0, 0, 0, 1]]


def test_plain_module_policy():
    tok = CharTokenizer("abcdefgh =+0123456789")
    policy = NeuralPolicy(PlainLM(tok.vocab_size), tok)
    assert not policy.supports_cache and not policy.fused_head()
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS)
    r = generate(policy, ids, mask, 1, max_new_tokens=5)
    assert r.completion_ids.shape[0] == 3
    with pytest.raises(ValueError, match="use_cache"):
        generate(policy, ids, mask, 1, max_new_tokens=5, use_cache=True)
    with pytest.raises(ValueError, match="value_head"):
        NeuralPolicy(PlainLM(tok.vocab_size), tok, value_head=True)


def test_fused_head_detected_and_value_head():
    policy = tiny_policy(value_head=True)
    assert policy.fused_head()
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS)
    out = policy(ids, mask, hidden=True)
    assert out.hidden.shape[:2] == ids.shape
    assert policy.values(out.hidden).shape == ids.shape
    ref = policy.frozen_copy()
    assert all(not p.requires_grad for p in ref.parameters())
    assert ref is not policy.model


def test_bad_arguments():
    policy = tiny_policy()
    ids, mask = policy.tokenizer.encode_prompts(PROMPTS)
    with pytest.raises(TypeError, match="nn.Module"):
        NeuralPolicy(object(), policy.tokenizer)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(policy, ids, mask, 1, max_new_tokens=0)
    with pytest.raises(ValueError, match="prompt_mask"):
        generate(policy, ids, torch.zeros_like(mask), 1, max_new_tokens=2)
    with pytest.raises(TypeError, match="seed"):
        generate(policy, ids, mask, 1.5, max_new_tokens=2)
    stream = RandomStream(0)
    with pytest.raises(ValueError, match="top_p"):
        generate(policy, ids, mask, stream, max_new_tokens=2, top_p=0.0)
    assert stream.counter == 0  # a failed rollout does not move the caller's stream
