"""Fault injection for the sweep tests (test code only): a trial callback that makes chosen trials
raise, kill their worker process, or kill the sweep's driver, once they have done N iterations.

The callback runs inside Ray workers, which cannot import this file: it is pickled by value
(cloudpickle's ``register_pickle_by_value``).  Run as a module from the checkout
(``python -m tests.sweep_faults CONFIG OUT SELECTOR=ACTION@N``), it is a sweep driver with one
fault, for the test that kills the driver midway.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys

ACTIONS = ("raise", "raise-once", "exit", "exit-once", "kill-driver-once")


@dataclasses.dataclass(frozen=True)
class Fault:
    """``selector``: a trial id or ``ALGORITHM:SEED``; ``action`` (see ACTIONS): ``raise``
    (every attempt raises RuntimeError), ``raise-once`` (only the first attempt), ``exit`` /
    ``exit-once`` (the worker process dies, ``os._exit(1)``), ``kill-driver-once`` (SIGKILL the
    driver, then die); it fires once the trial has done ``at`` iterations, after a checkpoint."""

    selector: str
    action: str
    at: int = 0
    driver_pid: int = dataclasses.field(default_factory=os.getpid)

    def __post_init__(self):
        if self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")

    @classmethod
    def parse(cls, text: str) -> Fault:
        selector, action = text.split("=", 1)
        at = 0
        if "@" in action:
            action, n = action.split("@", 1)
            at = int(n)
        return cls(selector.strip(), action.strip(), at)

    def __call__(self, attempt, trainer, metrics) -> None:
        spec = attempt.spec
        if self.selector not in (spec["trial_id"], f"{spec['algorithm']}:{spec['seed']}"):
            return
        if trainer.iterations_done < self.at:
            return
        if self.action.endswith("-once") and attempt.attempt > 1:
            return
        attempt.checkpoint(trainer)  # the next attempt resumes exactly here
        if self.action.startswith("raise"):
            raise RuntimeError(
                f"injected fault: trial {spec['trial_id']} attempt "
                f"{attempt.attempt} at iteration {trainer.iterations_done}"
            )
        if self.action == "kill-driver-once":
            os.kill(self.driver_pid, signal.SIGKILL)
        os._exit(1)


def faults(*texts: str) -> list:
    """Fault callbacks from ``SELECTOR=ACTION@N`` texts, pickled by value into Ray workers."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return [Fault.parse(text) for text in texts]


if __name__ == "__main__":  # a sweep driver with faults: CONFIG OUT FAULT...
    from fastlmrl.sweep import sweep

    config, out, *texts = sys.argv[1:]
    result = sweep(
        config, out=out, workers=2, plot=False, trial_callbacks=[Fault.parse(t) for t in texts]
    )
    sys.exit(1 if result.failed else 0)
