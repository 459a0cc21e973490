"""Benchmarks: one pretraining step of the default small model (fastlmrl.neural.pretrain).

    nice -n 0 pytest benchmarks/bench_pretrain.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops

A step is what :func:`fastlmrl.neural.pretrain` does per batch: forward of a ``transformers``
model on (32, 64) token ids, next-token cross-entropy, backward, gradient clipping, AdamW.
Time per token; ``M_items_per_s`` = tokens/s.  Parametrised by architecture (GPT-2, Llama; 2
layers, 128 wide, V = 67, the character vocabulary of the pretraining text) and torch thread
count (1, 2): on a busy machine two threads can be slower than one.
"""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
try:  # missing packages fail the run, they are never skipped
    import torch
    import transformers  # noqa: F401
except ImportError as exc:
    raise ImportError("the fastlmrl.neural tests need PyTorch and transformers: pip install "
                      "torch==2.13.0 (CPU build), then pip install 'fastlmrl[neural]'") from exc

from conftest import measure  # noqa: E402

from fastlmrl.neural import build_model  # noqa: E402

V, B, T = 67, 32, 64


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_pretrain_step(benchmark, architecture, threads):
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(V, architecture=architecture, seed=0)
        model.train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, V, (B, T + 1), generator=gen)

        def step():
            logits = model(input_ids=x[:, :-1]).logits
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()

        measure(benchmark, step, items=B * T, group=f"pretrain step {architecture}", rounds=10)
        benchmark.extra_info["threads"] = threads
    finally:
        torch.set_num_threads(saved)
