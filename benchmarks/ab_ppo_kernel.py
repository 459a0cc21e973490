"""A/B of the PPO loss kernel (loss + gradient over float32 logits): this tree against an older one.

    python benchmarks/ab_ppo_kernel.py --old-ref HEAD~1 [--backends cython,numba]
        [--sizes 65536x64,4096x50257] [--threads 1,2] [--rounds 15] [--torch]

The old Cython kernel is built from ``git archive OLD_REF`` in a temporary folder
(``FASTLMRL_CYTHON_ONLY=policy_losses python setup.py build_ext --inplace``, ~1 min) and loaded
beside this tree's; the old Numba kernel is ``fastlmrl/_numba/policy_losses.py`` of OLD_REF
compiled against this tree's helper modules (``fast_math``, ``log_probs``: the comparison is of
the policy_losses file itself).  ``--old-so PATH`` uses an already built old Cython module
instead.  Each round calls every variant once (old, new, [torch eager]) in a rotating order, so
a ratio is taken under the same load; the table gives the median time per call of each variant,
M tokens/s and new/old speed-up (> 1: the new kernel is faster; ``cpu n/o``: the same ratio of
process CPU time per call, steadier than wall time on a shared machine; ``best n/o``: the ratio
of the fastest calls, the least disturbed by other processes), at each thread count
(``num_threads`` of the kernel: exactly that many threads, no free-core cap).  Results of old and
new are checked to be bit-identical once per case.

``--torch``: the same loss in eager PyTorch autograd (log_softmax, gather, clipped ratio,
backward), at torch's default thread count, as an outside yardstick.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from fastlmrl._cython import policy_losses as new_cython  # noqa: E402
from fastlmrl._numba import policy_losses as new_numba  # noqa: E402


def build_old_cython(ref: str, workdir: str) -> str:
    """Build OLD_REF's policy_losses extension in workdir; the path of the module file."""
    archive = subprocess.run(
        ["git", "-C", ROOT, "archive", ref], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", workdir], input=archive, check=True)
    env = dict(os.environ, FASTLMRL_CYTHON_ONLY="policy_losses")
    subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace"],
        cwd=workdir,
        env=env,
        check=True,
        capture_output=True,
    )
    folder = os.path.join(workdir, "fastlmrl", "_cython")
    for name in os.listdir(folder):
        if name.startswith("policy_losses.") and name.endswith((".so", ".pyd")):
            return os.path.join(folder, name)
    raise RuntimeError("the old policy_losses extension was not built")


def load_old_cython(path: str):
    spec = importlib.util.spec_from_file_location("fastlmrl._cython.policy_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_old_numba(ref: str, workdir: str):
    source = subprocess.run(
        ["git", "-C", ROOT, "show", f"{ref}:fastlmrl/_numba/policy_losses.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    source = source.replace("from .._status", "from fastlmrl._status").replace(
        "from .", "from fastlmrl._numba."
    )
    path = os.path.join(workdir, "old_numba_policy_losses.py")
    with open(path, "w") as handle:
        handle.write(source)
    spec = importlib.util.spec_from_file_location("old_numba_policy_losses", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_case(n: int, v: int):
    rng = np.random.default_rng(0)
    x = np.empty((n, v), dtype=np.float32)
    for i in range(0, n, 256):
        x[i : i + 256] = rng.standard_normal((min(256, n - i), v), dtype=np.float32) * 2
    tokens = rng.integers(0, v, n)
    old = (rng.standard_normal(n) * 0.1 - 4.0).astype(np.float32)
    adv = rng.standard_normal(n).astype(np.float32)
    w = np.full(n, 1.0 / n, dtype=np.float32)
    return x, tokens, old, adv, w


class KernelCall:
    """One PPO kernel call with its own preallocated outputs (token-level ratios, clip 0.2/0.28)."""

    def __init__(self, module, case, threads):
        x, tokens, old, adv, w = case
        n = x.shape[0]
        self.module = module
        self.args = (x, tokens, old, adv, w, np.empty(0, np.float32), np.zeros(1, np.int64))
        self.outs = (np.empty(n), np.empty(n), np.empty(n), np.empty_like(x), np.zeros(7))
        self.threads = threads

    def __call__(self):
        status = self.module.ppo_loss(
            *self.args, 0.2, 0.28, 0.0, 0.0, 3, 0, *self.outs, self.threads
        )
        if status:
            raise RuntimeError(f"status {status}")


def torch_eager(case):
    import torch

    x, tokens, old, adv, w = (torch.from_numpy(a) for a in case)

    def run():
        logits = x.detach().requires_grad_(True)
        logp = torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0]
        ratio = torch.exp(logp - old)
        loss = torch.sum(w * torch.maximum(-adv * ratio, -adv * ratio.clamp(0.8, 1.28)))
        loss.backward()

    return run


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--old-ref", default="HEAD")
    parser.add_argument("--old-so", default=None)
    parser.add_argument("--backends", default="cython,numba")
    parser.add_argument("--sizes", default="65536x64,4096x50257")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--torch", action="store_true")
    args = parser.parse_args(argv)
    backends = [b for b in args.backends.split(",") if b]
    workdir = tempfile.mkdtemp(prefix="ab_ppo_")
    modules = {}
    if "cython" in backends:
        path = args.old_so or build_old_cython(args.old_ref, workdir)
        modules["cython"] = (load_old_cython(path), new_cython)
    if "numba" in backends:
        modules["numba"] = (load_old_numba(args.old_ref, workdir), new_numba)
    print(f"old = {args.old_so or args.old_ref}, new = this tree; median ms per call")
    print(
        f"{'backend':8} {'size':>12} {'T':>2} {'old ms':>8} {'new ms':>8} {'new/old':>8} "
        f"{'new Mtok/s':>10} {'cpu n/o':>8} {'best n/o':>8}"
        + (f" {'torch ms':>9} {'new/torch':>9}" if args.torch else "")
    )
    for size in args.sizes.split(","):
        n, v = (int(s) for s in size.split("x"))
        case = make_case(n, v)
        rounds = args.rounds if n * v <= 1 << 23 else max(3, args.rounds // 4)
        for backend, (old_mod, new_mod) in modules.items():
            for threads in (int(t) for t in args.threads.split(",")):
                calls = {
                    "old": KernelCall(old_mod, case, threads),
                    "new": KernelCall(new_mod, case, threads),
                }
                if args.torch:
                    calls["torch"] = torch_eager(case)
                for call in calls.values():
                    call()  # compile / warm up
                same = all(
                    np.array_equal(a, b, equal_nan=True)
                    for a, b in zip(calls["old"].outs, calls["new"].outs, strict=True)
                )
                names = list(calls)
                times = {name: [] for name in names}
                cpu = {name: [] for name in names}
                for r in range(rounds):
                    order = names[r % len(names) :] + names[: r % len(names)]
                    for name in order:
                        c0 = time.process_time()
                        t0 = time.perf_counter()
                        calls[name]()
                        times[name].append(time.perf_counter() - t0)
                        cpu[name].append(time.process_time() - c0)
                med = {name: statistics.median(ts) for name, ts in times.items()}
                cpu_med = {name: statistics.median(ts) for name, ts in cpu.items()}
                best = {name: min(ts) for name, ts in times.items()}
                line = (
                    f"{backend:8} {size:>12} {threads:>2} {med['old'] * 1e3:8.3f} "
                    f"{med['new'] * 1e3:8.3f} {med['old'] / med['new']:8.2f} "
                    f"{n / med['new'] * 1e-6:10.2f} {cpu_med['old'] / cpu_med['new']:8.2f} "
                    f"{best['old'] / best['new']:8.2f}"
                )
                if args.torch:
                    line += f" {med['torch'] * 1e3:9.3f} {med['torch'] / med['new']:9.2f}"
                print(line + ("" if same else "  RESULTS DIFFER"), flush=True)


if __name__ == "__main__":
    main()
