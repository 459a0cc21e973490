r"""Batched autoregressive generation from a :class:`~fastlmrl.neural.NeuralPolicy`.

:func:`generate` continues B left-padded prompts (``prompt_ids`` (B, P), ``prompt_mask`` (B, P)
with 1 on the prompt tokens) by at most ``max_new_tokens`` tokens each.

* **Key/value cache** (``use_cache=True``, the default when the model's ``forward`` takes
  ``past_key_values``): step 0 runs the whole prompt, every later step only the B new tokens with
  the cache the model returned.  ``use_cache=False`` recomputes the whole sequence at every step
  (for models without a cache); both draw the same tokens (the logits agree to rounding; a test
  checks the tokens).
* **Positions**: ``position_ids = cumsum(mask) - 1`` (:func:`~fastlmrl.neural.policy.
  position_ids_from_mask`), so a left-padded row's first token has position 0.
* **Sampling** with :func:`fastlmrl.torch.sample_tokens` (temperature, top-k, top-p, min-p) from
  fastlmrl's counter-based RNG: step ``t`` draws row ``b`` with counter ``c + t*B + b`` of ``seed``
  (a :class:`~fastlmrl.RandomStream`, advanced by ``B`` per step; an int seed is a fresh stream),
  so a seed reproduces a rollout exactly, whatever the thread count of the sampler.
* **Stop**: a row ends at its first ``eos_token_id`` (included in the completion, **terminated**)
  or after ``max_new_tokens`` tokens without one (**truncated**).  Later positions of an ended
  row hold ``pad_token_id`` with mask 0; generation stops when every row has ended.

Per completion token ``t`` (time index: the token at position ``P + t`` of the full sequence,
drawn from the logits at position ``P + t - 1``) the rollout records ``log_probs`` -- the
log-probability of the token under the distribution it was sampled from (temperature, top-k,
top-p applied), the :math:`\log\pi_{old}` of the trainers -- and ``entropies`` -- the entropy of
:math:`\mathrm{softmax}(\text{logits}/\tau)` (before the top-k / top-p filters).  With
``return_logits=True`` it also keeps the logits of every step (``logits`` (B, T, V) float32, before
temperature and filters; 0 on padding): the trainers compute the exact KL to their reference from
them (memory B x T x V floats, the size of one forward pass's logits over the completions).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..rng import RandomStream
from ..torch import entropy as _entropy
from ..torch import sample_tokens
from .policy import NeuralPolicy

__all__ = ["Rollout", "generate"]


@dataclass
class Rollout:
    """B generated completions of left-padded prompts (all tensors, CPU)."""

    prompt_ids: Tensor  #: (B, P) int64, left-padded
    prompt_mask: Tensor  #: (B, P) int64, 1 on prompt tokens
    completion_ids: Tensor  #: (B, T) int64, pad after a row's end
    completion_mask: Tensor  #: (B, T) bool, True on generated tokens (EOS included)
    log_probs: Tensor  #: (B, T) float32, log-prob under the sampling distribution; 0 on padding
    entropies: Tensor  #: (B, T) float32, entropy of softmax(logits / temperature); 0 on padding
    terminated: Tensor  #: (B,) bool, ended at EOS
    truncated: Tensor  #: (B,) bool, hit max_new_tokens without EOS
    #: (B, T, V) float32 logits of each step (before temperature and filters; 0 on padding),
    #: only when generated with ``return_logits=True`` (else None)
    logits: Tensor | None = None

    @property
    def lengths(self) -> Tensor:
        """(B,) number of completion tokens per row."""
        return self.completion_mask.sum(1)

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum())

    def input_ids(self) -> Tensor:
        """(B, P + T) prompt and completion."""
        return torch.cat([self.prompt_ids, self.completion_ids], 1)

    def attention_mask(self) -> Tensor:
        """(B, P + T) 1 on the prompt and completion tokens."""
        return torch.cat([self.prompt_mask, self.completion_mask.long()], 1)

    def texts(self, tokenizer) -> list:
        """The completions as text, cut before EOS (special tokens dropped)."""
        out = []
        eos = tokenizer.eos_token_id
        for row, n in zip(self.completion_ids.tolist(), self.lengths.tolist()):
            row = row[:n]
            if row and row[-1] == eos:
                row = row[:-1]
            out.append(tokenizer.decode(row))
        return out

    def select(self, index: Tensor | Sequence[int]) -> Rollout:
        """The rows ``index`` (a tensor or list of row numbers)."""
        index = torch.as_tensor(index, dtype=torch.long)
        fields = (
            "prompt_ids",
            "prompt_mask",
            "completion_ids",
            "completion_mask",
            "log_probs",
            "entropies",
            "terminated",
            "truncated",
        )
        return Rollout(
            **{f: getattr(self, f)[index] for f in fields},
            logits=None if self.logits is None else self.logits[index],
        )


def _int(x, name: str, lo: int) -> int:
    if isinstance(x, bool) or not isinstance(x, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < lo:
        raise ValueError(f"{name} must be >= {lo}, got {x}")
    return int(x)


@torch.no_grad()
def generate(
    policy: NeuralPolicy,
    prompt_ids: Tensor,
    prompt_mask: Tensor | None,
    seed: int | RandomStream,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    use_cache: bool | None = None,
    return_logits: bool = False,
) -> Rollout:
    """Sample completions of ``prompt_ids`` (see the module docstring); returns a
    :class:`Rollout`.  ``seed``: int or :class:`~fastlmrl.RandomStream` (advanced by B per
    step, only once the rollout succeeded); ``use_cache``: None = when the model offers one;
    ``return_logits``: keep every step's logits in ``Rollout.logits``."""
    if not isinstance(policy, NeuralPolicy):
        raise TypeError(f"policy must be a NeuralPolicy, got {type(policy).__name__}")
    if (
        not isinstance(prompt_ids, Tensor)
        or prompt_ids.ndim != 2
        or prompt_ids.shape[0] == 0
        or prompt_ids.shape[1] == 0
        or prompt_ids.dtype != torch.int64
    ):
        raise ValueError("prompt_ids must be a non-empty (B, P) int64 tensor")
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompt_ids)
    if not isinstance(prompt_mask, Tensor) or prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask must be a tensor of prompt_ids' shape {tuple(prompt_ids.shape)}"
        )
    prompt_mask = prompt_mask.long()
    if bool((prompt_mask.sum(1) == 0).any()):
        raise ValueError("prompt_mask: every prompt needs at least one token")
    max_new_tokens = _int(max_new_tokens, "max_new_tokens", 1)
    if return_logits not in (True, False):
        raise TypeError(f"return_logits must be a bool, got {type(return_logits).__name__}")
    if use_cache is None:
        use_cache = policy.supports_cache
    elif use_cache and not policy.supports_cache:
        raise ValueError("use_cache=True: this model's forward takes no past_key_values")
    stream = (
        # RandomStream checks the seed's type itself (int or NumPy integer)
        RandomStream(seed)  # type: ignore[arg-type]
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool)
        else seed
    )
    if not isinstance(stream, RandomStream):
        raise TypeError(f"seed must be an int or a RandomStream, got {type(seed).__name__}")
    work = RandomStream.from_state(stream.state())  # the caller's stream moves only on success
    tok = policy.tokenizer
    eos, pad = tok.eos_token_id, tok.pad_token_id
    b = prompt_ids.shape[0]
    ids, mask = prompt_ids, prompt_mask
    tokens, logps, ents, step_logits = [], [], [], []
    done = torch.zeros(b, dtype=torch.bool)
    cache = None
    step_input, step_mask = ids, mask
    was_training = policy.training
    policy.eval()
    try:
        for _ in range(max_new_tokens):
            if use_cache:
                out = policy(
                    step_input, step_mask, use_cache=True, past_key_values=cache, last_only=True
                )
                cache = out.past_key_values
            else:
                out = policy(ids, mask, last_only=True)
            logits = out.logits[:, -1, :].float()
            draw = sample_tokens(
                logits, work, temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p
            )
            ent = _entropy(logits / temperature if temperature != 1.0 else logits)
            live = ~done
            nxt = torch.where(live, draw.tokens, torch.full_like(draw.tokens, pad))
            tokens.append(nxt)
            logps.append(torch.where(live, draw.log_probs.float(), torch.zeros(b)))
            ents.append(torch.where(live, ent.float(), torch.zeros(b)))
            if return_logits:
                step_logits.append(torch.where(live[:, None], logits, torch.zeros(())))
            done = done | (live & (draw.tokens == eos))
            ids = torch.cat([ids, nxt[:, None]], 1)
            mask = torch.cat([mask, live.long()[:, None]], 1)
            step_input, step_mask = nxt[:, None], mask
            if bool(done.all()):
                break
    finally:
        policy.train(was_training)
    completion = torch.stack(tokens, 1)
    completion_mask = mask[:, prompt_ids.shape[1] :].bool()
    rollout = Rollout(
        prompt_ids,
        prompt_mask,
        completion,
        completion_mask,
        torch.stack(logps, 1),
        torch.stack(ents, 1),
        done.clone(),
        ~done,
        logits=torch.stack(step_logits, 1) if return_logits else None,
    )
    stream.counter = work.counter
    return rollout
