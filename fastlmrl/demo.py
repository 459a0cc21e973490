"""``fastlmrl demo``: fit a character n-gram LM, RL-fine-tune it with PPO and with GRPO toward a
small lexicon under a KL leash, and show what changed.

What the reader sees, before and after each fine-tuning (:func:`evaluate`, on the same prompts
and the same random stream):

* ``score`` -- the task reward: whole lexicon words per sample (``fastlmrl.tasks``: a word counts
  only between non-letters, so "thappy" or "clevery" earn nothing);
* ``KL`` -- the exact :math:`\\sum_t \\mathrm{KL}(\\pi(\\cdot|s_t)\\,\\|\\,\\pi_{ref}(\\cdot|s_t))`
  over the generated tokens, in nats per sequence (0 for the reference itself);
* ``ref ppl`` -- the reference LM's perplexity of the samples,
  :math:`\\exp(-\\frac{1}{N}\\sum \\log\\pi_{ref}(a_t|s_t))` over all N generated tokens: it stays
  near the reference's perplexity of its own samples while the text stays text, and grows when
  the policy writes what the LM finds unlikely (letter salad that games the reward).

So the reward goes up while the KL stays bounded and the samples stay text.  The Cython backend
(compiled at install) is the default, so the first run does not wait for a JIT compiler; with
``--backend numba`` the first run after an install compiles the kernels once (announced on
stderr, then cached outside the package folder).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from . import _backend

__all__ = ["DEMO_ALGORITHMS", "add_demo_arguments", "cmd_demo", "evaluate", "samples"]

DEMO_ALGORITHMS = ("ppo", "grpo")
EVAL_SEQUENCES = 512  #: samples per before/after evaluation
EVAL_SEED = 12345  #: their random stream (the same before and after)


def add_demo_arguments(parser) -> None:
    """The options of ``fastlmrl demo``."""
    parser.add_argument(
        "--backend",
        choices=_backend.BACKENDS,
        help="kernel backend (default: cython, else numba, else python)",
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="training iterations of each algorithm (default: 150; with "
        "--neural: 60 GRPO iterations)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="the only source of randomness (default: 0)"
    )
    parser.add_argument("--corpus", help="a UTF-8 text file (default: the built-in corpus)")
    parser.add_argument(
        "--plot",
        default="fastlmrl-demo.png",
        help="learning-curve PNG, needs matplotlib; '' for none (default: fastlmrl-demo.png)",
    )
    parser.add_argument(
        "--neural",
        action="store_true",
        help="instead: GRPO on a transformers model (the cached pretrained "
        "default model, pretrained first when not cached) on a verifiable "
        "task; held-out success rate, samples and KL before/after; needs "
        "pip install 'fastlmrl[neural]'",
    )
    parser.add_argument("--task", help="with --neural: the verifiable task (default: sort)")
    parser.add_argument(
        "--model",
        metavar="FOLDER",
        help="with --neural: start from this local model folder instead",
    )


def samples(trainer, task, n: int, seed) -> list:
    """``n`` texts (prompt + generation) of the trainer's current policy, from stream ``seed``."""
    batch = trainer.sample(n, seed)
    out = []
    for b in range(n):
        prompt = task.prompt_text(int(batch.prompt_ids[b]))
        out.append(prompt + task.decode(batch.actions[b, : batch.lengths[b]]))
    return out


def evaluate(trainer, n: int = EVAL_SEQUENCES, seed=EVAL_SEED) -> dict:
    """Score, exact KL to the reference and the reference's perplexity of ``n`` samples of the
    trainer's current policy (module docstring)."""
    batch = trainer.sample(n, seed)
    contexts, tokens = batch.contexts[batch.valid], batch.actions[batch.valid]
    ref = trainer.reference_log_probs(contexts, tokens)
    return {
        "score": float(batch.scores.mean()),
        "kl": float(trainer.policy_diagnostics(batch)["kl"]),
        "ref_perplexity": float(np.exp(-ref.mean())) if ref.size else float("nan"),
        "length": float(batch.lengths.mean()),
    }


def _line(name: str, m: dict) -> str:
    return (
        f"  {name:10s} score {m['score']:6.3f} words/sample   KL {m['kl']:6.2f} nats/sequence   "
        f"ref ppl {m['ref_perplexity']:5.2f}"
    )


def cmd_demo(args, out=None) -> dict:
    """Run the demo; returns ``{"reference": eval, algo: {"history", "before", "after"}}``."""
    out = out or sys.stdout
    if getattr(args, "neural", False):  # fastlmrl/neural_run.py
        from .neural_run import cmd_demo_neural

        return cmd_demo_neural(args, out)
    for option in ("task", "model"):
        if getattr(args, option, None) is not None:
            raise ValueError(f"--{option} applies to the demo with --neural")
    if args.iterations is None:
        args.iterations = 150
    import fastlmrl

    from .runs import make_trainer
    from .tasks import make_text_task

    if args.backend:
        fastlmrl.set_backend(args.backend)
    started = time.perf_counter()
    task = make_text_task(args.corpus)
    print(
        f"fastlmrl {fastlmrl.__version__} demo — backend {fastlmrl.get_backend()}, "
        f"{_backend.get_num_threads()} threads",
        file=out,
    )
    print(
        f"language model: character {task.lm.order}-gram, {task.lm.smoothing} smoothing, "
        f"V={task.vocab_size}, {task.num_contexts} contexts; held-out perplexity "
        f"{task.lm.perplexity(task.tokenizer.encode_lines(task.held_out)):.2f}",
        file=out,
    )
    print(
        f"reward: +1 per whole lexicon word generated {list(task.lexicon)} (between "
        "non-letters: 'kind.' counts, 'kindly' does not)",
        file=out,
    )
    print(
        f"evaluation: {EVAL_SEQUENCES} samples; score = words per sample, KL = exact KL to the "
        "reference LM (nats per sequence), ref ppl = the reference LM's perplexity of the "
        "samples",
        file=out,
    )
    results = {}
    for algo in DEMO_ALGORITHMS:
        trainer = make_trainer(algo, task, args.seed)
        before = evaluate(trainer)
        if algo == DEMO_ALGORITHMS[0]:
            results["reference"] = before
            print("\nreference LM (before fine-tuning):", file=out)
            print(_line("reference", before), file=out)
            for text in samples(trainer, task, 4, seed=EVAL_SEED):
                print(f"    {text!r}", file=out)
        print(
            f"\n{algo.upper()}: {args.iterations} iterations, KL coefficient "
            f"{trainer.kl_controller.value}",
            file=out,
            flush=True,
        )
        history = trainer.train(args.iterations)
        for m in history[:: max(1, args.iterations // 6)] + [history[-1]]:
            print(
                f"  iter {m['iteration']:4d}  score {m['score']:6.3f}  KL {m['kl']:7.3f}  "
                f"entropy {m['entropy']:.3f}  {m['tokens_per_second'] / 1e6:5.2f} M tok/s",
                file=out,
            )
        after = evaluate(trainer)
        print(f"{algo.upper()} after training:", file=out)
        print(_line(algo.upper(), after), file=out)
        for text in samples(trainer, task, 4, seed=EVAL_SEED):
            print(f"    {text!r}", file=out)
        tokens = sum(m["tokens"] for m in history)
        seconds = sum(m["seconds"] for m in history)
        print(
            f"  {tokens} tokens trained in {seconds:.2f} s ({tokens / seconds / 1e6:.2f} M "
            "tokens/s)",
            file=out,
        )
        results[algo] = {"history": history, "before": before, "after": after}
    print("\nbefore -> after (same prompts, same random stream):", file=out)
    print(_line("reference", results["reference"]), file=out)
    for algo in DEMO_ALGORITHMS:
        print(_line(algo.upper(), results[algo]["after"]), file=out)
    if args.plot:
        _plot({a: results[a]["history"] for a in DEMO_ALGORITHMS}, args.plot, out)
    print(f"\ndemo finished in {time.perf_counter() - started:.1f} s", file=out)
    return results


def _plot(histories: dict, path: str, out) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "(no learning-curve plot: matplotlib is not installed; `pip install matplotlib` "
            "adds it)",
            file=out,
        )
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    for algo, history in histories.items():
        it = [m["iteration"] for m in history]
        axes[0].plot(it, [m["score"] for m in history], label=algo.upper())
        axes[1].plot(it, [m["kl"] for m in history], label=algo.upper())
    axes[0].set(xlabel="iteration", ylabel="lexicon words per sample", title="reward")
    axes[1].set(xlabel="iteration", ylabel="nats per sequence", title="KL to the reference LM")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    print(f"learning curves written to {path}", file=out)
