"""Benchmarks: pretraining the default small model (:func:`fastlmrl.neural.pretrain`).

The whole default pretraining, timed, no cache (one command; prints wall time, CPU time, steps,
steps/s and the held-out perplexities of the model and of the n-gram LM)::

    python benchmarks/bench_pretrain.py [--threads 1] [--steps N] [--seconds S]

One pretraining step (pytest-benchmark)::

    nice -n 0 pytest benchmarks/bench_pretrain.py --benchmark-enable --benchmark-group-by=group \
        --benchmark-columns=mean,ops

A step is what :func:`fastlmrl.neural.pretrain` does per batch: forward of a ``transformers``
model on (16, 64) token ids (the default batch), next-token cross-entropy, backward, gradient
clipping, AdamW.
Time per token; ``M_items_per_s`` = tokens/s.  Parametrised by architecture (GPT-2, Llama; 2
layers, 96 wide as the default pretrained model, V = 67, the character vocabulary of the
pretraining text) and torch thread count (1, 2): on a busy machine two threads can be slower
than one.
"""

import argparse
import os
import sys
import time

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
if __name__ == "__main__":  # run as a script: import this checkout's fastlmrl
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
try:  # missing packages fail the run, they are never skipped
    import torch
    import transformers  # noqa: F401
except ImportError as exc:
    raise ImportError(
        "the fastlmrl.neural tests need PyTorch and transformers: pip install "
        "torch==2.13.0 (CPU build), then pip install 'fastlmrl[neural]'"
    ) from exc


from fastlmrl.neural import build_model  # noqa: E402

V, B, T = 67, 16, 64


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("architecture", ["gpt2", "llama"])
def test_pretrain_step(benchmark, architecture, threads):
    from conftest import measure

    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build_model(V, architecture=architecture, n_embd=96, seed=0)
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


def main(argv=None) -> int:
    """Time the default pretraining (no cache) and print what the issue asks for."""
    from fastlmrl.neural import pretrain
    from fastlmrl.neural.pretraining import DEFAULT_SECONDS, DEFAULT_STEPS

    parser = argparse.ArgumentParser(description="time fastlmrl's default pretraining")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument(
        "--seconds", type=float, default=DEFAULT_SECONDS, help="training time limit"
    )
    parser.add_argument("--eval-problems", type=int, default=200)
    args = parser.parse_args(argv)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    result = pretrain(
        steps=args.steps,
        seconds=args.seconds,
        threads=args.threads,
        eval_problems=args.eval_problems,
    )
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    print(result.summary())
    print(
        f"pretrain() total: wall {wall:.1f} s, CPU {cpu:.1f} s (load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores); training loop: wall "
        f"{result.seconds:.1f} s, CPU {result.cpu_seconds:.1f} s, {result.steps} steps, "
        f"{result.steps / max(result.seconds, 1e-9):.2f} steps/s, "
        f"{result.cpu_seconds / max(result.steps, 1) * 1e3:.1f} CPU ms/step"
        + (" [stopped by the time limit]" if result.time_limited else "")
    )
    print(
        f"held-out perplexity: model {result.perplexity:.3f}, "
        f"{result.config['ngram_order']}-gram LM {result.ngram_perplexity:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
