r"""Monte Carlo control trainer (Sutton & Barto 2018, §5.3–5.4; every-visit: §5.1).

One iteration plays a batch of B complete episodes with the behaviour policy (ε-greedy or
Boltzmann in :math:`Q`, so every policy is soft: on-policy MC control without exploring starts,
S&B §5.4), then hands them to :func:`fastlmrl.mc_control_update` in one call (CSR offsets, row
order).  Within episode ``e`` of length :math:`T_e` (time index ``t`` = step, ``rewards[t]`` =
:math:`R_{t+1}`), backward from the last step (eq. 3.9):

.. math::  G_t = R_{t+1} + \gamma\,G_{t+1},\quad G_{T_e} = 0,\qquad
           Q(S_t, A_t) \leftarrow Q(S_t, A_t) + \beta\,(G_t - Q(S_t, A_t))

for the first visit of :math:`(S_t, A_t)` in the episode (``first_visit=True``) or every visit,
with :math:`\beta = 1/N(S_t, A_t)` (sample average, S&B §2.4; ``alpha=None``) or a constant
:math:`\alpha`.  ``counts`` holds :math:`N`.  With a fixed ε the estimates converge to
:math:`q_{\pi_\varepsilon}` (the best ε-soft policy, S&B §5.4).

Truncated episodes (time limit, or the trainer's ``max_episode_steps`` cut): Monte Carlo has no
bootstrap, so their return is the discounted sum of the rewards observed (the task is treated as
finite-horizon, as a text-generation episode cut at ``max_new_tokens`` with its score paid at the
cut is); ``drop_truncated=True`` skips them instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..monte_carlo import mc_control_update
from ._value_base import TabularValueTrainer, ValueConfig, play_episodes

__all__ = ["MonteCarloConfig", "MonteCarloTrainer"]


@dataclass
class MonteCarloConfig(ValueConfig):
    """Hyper-parameters of :class:`MonteCarloTrainer` (module docstring for the update).

    The fields of :class:`ValueConfig`, documented there: ``gamma``, ``exploration``,
    ``epsilon_start`` / ``epsilon_end``, ``temperature_start`` / ``temperature_end``,
    ``decay_iterations``, ``schedule``, ``initial_q``, ``dtype``, ``max_episode_steps``,
    ``kl_coef``; and

    ``alpha`` — None (default) for sample averages, else a constant step in (0, 1];
    ``first_visit`` — first-visit (True) or every-visit (False) updates;
    ``drop_truncated`` — skip episodes that did not terminate.
    """

    # None: sample averages (the base's alpha is a float; a subclass may widen a dataclass field's
    # default only with this ignore)
    alpha: float | None = None  # type: ignore[assignment]
    first_visit: bool = True
    drop_truncated: bool = False


class MonteCarloTrainer(TabularValueTrainer):
    """Tabular on-policy Monte Carlo control: ``MonteCarloTrainer(env, config=None, seed=0)``.

    ``q`` the action values, ``counts`` (S, A) int64 the number of returns credited to each
    pair.  Metrics: those of the loop plus ``return`` (mean :math:`G_0` of the updated episodes)
    and ``updated_episodes``.
    """

    algorithm = "monte_carlo"
    Config = MonteCarloConfig
    alpha_optional = True

    def validate_config(self, cfg: Any) -> None:
        super().validate_config(cfg)
        for name in ("first_visit", "drop_truncated"):
            if not isinstance(getattr(cfg, name), bool):
                raise TypeError(
                    f"config.{name} must be a bool, got {type(getattr(cfg, name)).__name__}"
                )

    def init_tables(self) -> None:
        self.q = self.new_table()
        self.counts = np.zeros((self.num_states, self.num_actions), dtype=np.int64)

    def arrays(self) -> dict:
        return {"q": self.q, "counts": self.counts}

    def iteration(self) -> dict:
        cfg = self.config
        param = self.exploration_value()
        steps = []  # per step: (rows, states, actions, rewards) of the running rows

        def record(
            rows: np.ndarray,
            s: np.ndarray,
            a: np.ndarray,
            r: np.ndarray,
            s2: np.ndarray,
            te: np.ndarray,
            tr: np.ndarray,
        ) -> None:
            steps.append((rows, s, a, np.asarray(r, dtype=np.float64)))

        batch = play_episodes(
            self.env,
            self.stream,
            cfg.max_episode_steps,
            lambda states: self.select(states, param),
            record,
        )
        keep = ~batch.truncated if cfg.drop_truncated else np.ones_like(batch.truncated)
        if steps:
            rows = np.concatenate([x[0] for x in steps])
            # Group the steps by episode (row), keeping time order within each: stable sort.
            order = np.argsort(rows, kind="stable")
            rows = rows[order]
            states = np.concatenate([x[1] for x in steps])[order]
            actions = np.concatenate([x[2] for x in steps])[order]
            rewards = np.concatenate([x[3] for x in steps])[order]
            sel = keep[rows]
            rows, states, actions, rewards = rows[sel], states[sel], actions[sel], rewards[sel]
        else:
            rows = states = actions = np.zeros(0, dtype=np.int64)
            rewards = np.zeros(0)
        lengths = np.where(keep, batch.lengths, 0)
        offsets = np.zeros(lengths.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        returns = mc_control_update(
            self.q,
            states,
            actions,
            rewards,
            offsets,
            cfg.gamma,
            first_visit=cfg.first_visit,
            alpha=cfg.alpha,
            counts=self.counts,
        )
        metrics = batch.metrics()
        self.exploration_metrics(metrics, param)
        starts = offsets[:-1][lengths > 0]
        metrics["return"] = float(returns[starts].astype(np.float64).mean()) if starts.size else 0.0
        metrics["updated_episodes"] = int(keep.sum())
        return metrics
