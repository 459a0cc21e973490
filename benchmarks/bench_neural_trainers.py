"""End-to-end GRPO iterations on a transformers GPT-2: fastlmrl's fused ops vs the same loop with a
pure-PyTorch loss.

One iteration = rollout (KV-cache generation with ``fastlmrl.torch.sample_tokens``) + reference
forward + policy forward, loss and backward + AdamW step (:class:`fastlmrl.trainers.
NeuralGRPOTrainer`, ``num_prompts`` x ``group_size`` completions of ``max_new_tokens`` tokens,
``kl_coef`` 0.04, one minibatch).  ``impl``:

* ``fastlmrl``: the trainer as shipped -- the fused LM-head loss
  (:func:`fastlmrl.torch.linear_ppo_loss` on the last hidden states and the output weight: no
  (N, V) logits, no (N, V) gradient) and :func:`~fastlmrl.torch.linear_token_log_probs` for the
  reference;
* ``pytorch``: the same trainer, model, data and seed with the loss written in PyTorch on the
  model's logits (log_softmax + gather, ratio, clipped surrogate, k3 KL; TRL's formulation) and
  the reference log-probs by log_softmax + gather.

The vocabulary is a word-level Hugging Face tokenizer of V = 32768 ids (built offline), so the
LM head is the larger part of the model, as in real LMs.  ``extra_info``: ``tokens_per_s``
(completion tokens per second of iteration), the time split in seconds per iteration
(``generation_s``, ``reference_s``, ``forward_backward_loss_s``, ``optimizer_s``), the process
CPU time per iteration (``cpu_s_per_iteration``, all threads; steadier than wall time on a shared
machine),
``peak_extra_MB`` (RSS above the start during one iteration) and ``threads``.

Run: ``pytest benchmarks/bench_neural_trainers.py --benchmark-enable``.
"""

import threading
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from fastlmrl.neural import build_model  # noqa: E402
from fastlmrl.neural.policy import NeuralPolicy  # noqa: E402
from fastlmrl.trainers import NeuralGRPOConfig, NeuralGRPOTrainer  # noqa: E402
from fastlmrl.trainers._neural_base import exact_kl_rows  # noqa: E402

V = 32768
SETTINGS = dict(num_prompts=4, group_size=8, max_new_tokens=16, lr=1e-4, beta=0.04)
MODEL = dict(n_layer=2, n_embd=128, n_head=4, n_positions=64)


def word_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<bos>": 0, "<eos>": 1, "<unk>": 2}
    vocab.update({f"w{i}": i + 3 for i in range(vocab_size - 3)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )


class EchoTask:
    """Prompts of 6 random words; reward: the fraction of completion words that appear in the
    prompt (a cheap, dense reward: throughput is measured here, not learning)."""

    def prompts(self, n, seed=0):
        rng = np.random.default_rng(seed)
        return [" ".join(f"w{i}" for i in rng.integers(0, V - 3, 6)) for _ in range(n)]

    def reward(self, prompts, completions, terminated):
        out = []
        for p, c in zip(prompts, completions):
            words, seen = c.split(), set(p.split())
            out.append(sum(w in seen for w in words) / max(len(words), 1))
        return np.array(out)


class PyTorchLossGRPO(NeuralGRPOTrainer):
    """The same GRPO trainer with the loss and the reference log-probs in plain PyTorch."""

    def loss(self, rollout, rows, advantages, weights, ref_log_probs):
        cfg = self.config
        rows_t = torch.as_tensor(rows, dtype=torch.long)
        mask = rollout.completion_mask[rows_t]
        logits, _, _, _ = self.completion_states(
            self.policy, rollout, rows, need_logits=True, need_hidden=False
        )
        logp = logits.log_softmax(-1).gather(2, rollout.completion_ids[rows_t][..., None])[..., 0]
        old = rollout.log_probs[rows_t]
        adv = torch.as_tensor(advantages, dtype=torch.float32)[rows_t][:, None]
        ratio = torch.exp(logp - old)
        surrogate = -torch.minimum(ratio * adv, ratio.clamp(1 - cfg.clip, 1 + cfg.clip_high) * adv)
        ref = ref_log_probs[rows_t].float()
        kl = torch.exp(ref - logp) - (ref - logp) - 1
        per_token = surrogate + self.kl_controller.value * kl
        loss = (per_token * weights.float() * mask).sum()
        zero = torch.zeros((), dtype=torch.float64)
        return _Result(loss, logp.detach()[mask].double(), zero, zero, zero)

    @torch.no_grad()
    def reference_log_probs(self, rollout):
        with self.watch("reference"):
            logits, _, mask, _ = self.completion_states(
                self.reference,
                rollout,
                np.arange(rollout.completion_ids.shape[0]),
                need_logits=True,
                need_hidden=False,
            )
            logp = logits.log_softmax(-1).gather(2, rollout.completion_ids[..., None])[..., 0]
            # the exact KL metric, as the shipped trainer computes it (not part of the loss)
            self.exact_kl = torch.zeros(mask.shape, dtype=torch.float64)
            flat = logits[mask]
            self.exact_kl[mask] = exact_kl_rows(rollout.logits[mask], lambda rows: flat[rows])
        return (logp * mask).double()


class _Result:
    def __init__(self, loss, log_probs, clip_fraction, approx_kl_k3, kl_loss):
        self.loss, self.log_probs = loss, log_probs
        self.clip_fraction, self.approx_kl_k3, self.kl_loss = clip_fraction, approx_kl_k3, kl_loss


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def peak_extra_mb(fn) -> float:
    base = rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_bytes())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        fn()
    finally:
        done.set()
        thread.join()
    return round((max(peak[0], rss_bytes()) - base) / 1e6, 1)


def make_trainer(impl: str):
    tok = word_tokenizer(V)
    model = build_model(V, seed=0, bos_token_id=0, eos_token_id=1, **MODEL)
    cls = NeuralGRPOTrainer if impl == "fastlmrl" else PyTorchLossGRPO
    return cls(NeuralPolicy(model, tok), EchoTask(), NeuralGRPOConfig(**SETTINGS), seed=0)


@pytest.mark.parametrize("impl", ["fastlmrl", "pytorch"])
def test_grpo_iteration(benchmark, impl):
    trainer = make_trainer(impl)
    trainer.train(1)  # warm-up (allocator, op registration)
    benchmark.group = f"neural GRPO iteration V{V} {MODEL['n_layer']}x{MODEL['n_embd']}"
    start = len(trainer.history)
    cpu = time.process_time()
    benchmark.pedantic(lambda: trainer.train(1), rounds=5, iterations=1)
    cpu = (time.process_time() - cpu) / 5
    runs = trainer.history[start:]
    tokens = sum(h["tokens"] for h in runs)
    seconds = sum(h["seconds"] for h in runs)
    split = {
        k: float(np.mean([h.get(f"{k}_seconds", 0.0) for h in runs]))
        for k in ("generation", "reference", "optimizer", "train")
    }
    info = benchmark.extra_info
    info["tokens_per_s"] = round(tokens / seconds, 1)
    info["cpu_s_per_iteration"] = round(cpu, 3)  # process CPU time: robust on a shared machine
    info["generation_s"] = round(split["generation"], 4)
    info["reference_s"] = round(split["reference"], 4)
    info["optimizer_s"] = round(split["optimizer"], 4)
    info["forward_backward_loss_s"] = round(
        split["train"] - split["reference"] - split["optimizer"], 4
    )
    info["peak_extra_MB"] = peak_extra_mb(lambda: trainer.train(1))
    info["threads"] = torch.get_num_threads()
