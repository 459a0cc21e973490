r"""The loop shared by the tabular value-method trainers (Q-learning, SARSA, expected SARSA,
double Q-learning, Monte Carlo control) and the greedy evaluation of the planners.

Time indices follow Sutton & Barto (2018, §3.1): at step ``t`` of an episode the agent sees
:math:`S_t` (a context id), takes :math:`A_t` (a token id) and receives :math:`R_{t+1}` and
:math:`S_{t+1}` from ``env.step``.  One :meth:`TabularValueTrainer.iteration` is one *batch of
episodes*: the ``B = env.num_envs`` sequences are reset together (``env.reset(seed=stream)``, the
trainer's :class:`fastlmrl.RandomStream`) and stepped together, one kernel call per step, until
every one of them has finished its episode once.  A sequence that has finished is ignored from
then on (the environment's next-step autoreset restarts it, which this loop never reads), so
the batch holds exactly B episodes.  For each step the transitions of the still-running rows are
passed to the TD kernel in row order (:mod:`fastlmrl.td_learning` applies them in that order).

Termination and truncation (Pardo et al. 2018, "Time limits in reinforcement learning"):
``terminated`` means :math:`S_{t+1}` is terminal (value 0, no bootstrap); a time-limit
``truncated`` transition is passed with ``terminated=False`` and so bootstraps from
:math:`S_{t+1}`.  ``max_episode_steps`` is the trainer's own safety cut: a sequence still running
after that many steps is treated as truncated (needed only for environments whose episodes can
run forever, e.g. a cyclic :class:`fastlmrl.ContextMDP` without ``max_steps``).

Everything random — the environment's starts / prompts and the exploration draws — comes from
``self.stream``, so the tables plus the stream position are the whole state: a run resumed from a
checkpoint (:meth:`fastlmrl.trainers.Trainer.save` / ``load``) ends bit-identical to one that
never stopped.

Starting from a language model (a :class:`fastlmrl.tasks.TextTask` instead of an environment):
the trainer keeps the task's frozen reference :math:`\pi_{ref}` (its log-softmax table) and its
behaviour policy is the Boltzmann policy *around the reference*,

.. math::  \pi(a \mid s) = \frac{\pi_{ref}(a \mid s)\, e^{Q(s, a)/\beta}}
           {\sum_b \pi_{ref}(b \mid s)\, e^{Q(s, b)/\beta}},\qquad \beta = \text{kl\_coef},

the form of the KL-regularised optimal policy (Todorov 2007; the KL-control fine-tuning of
Jaques et al. 2017, "Sequence Tutor"; soft Q-learning for text generation, Guo et al. 2021), with
``Q`` learned by the algorithm from the task reward.  ``Q`` starts at 0, so the first episodes are
samples of the language model itself (a zero table explored uniformly would write letter salad
and never find a lexicon word), ``Q`` changes only where rewards are observed, and the policy
moves away from the LM only as far as those values pay for (β in reward units: a word worth 1
multiplies the odds of the tokens leading to it by up to :math:`e^{1/\beta}`).  Greedy actions
are the mode of that policy.  The ε / τ schedules below do not apply (the reference is the
exploration); the metrics report ``kl_coef``.

Exploration (the behaviour policy) is ε-greedy (S&B §2.2/§5.4, :func:`fastlmrl.epsilon_greedy`)
or Boltzmann (S&B §13.1, :func:`fastlmrl.boltzmann`); its parameter follows a schedule of the
iteration number ``k = iterations_done`` (one value per batch of episodes):

* ``schedule="linear"``: :math:`x_k = x_0 + (x_1 - x_0)\min(k / K, 1)` (Mnih et al. 2015);
* ``schedule="exponential"``: :math:`x_k = \max(x_1, x_0 d^k)` with :math:`d = (x_1/x_0)^{1/K}`,
  i.e. geometric decay reaching :math:`x_1` at :math:`k = K` (S&B §2.7);

with :math:`x_0` = ``epsilon_start`` / ``temperature_start``, :math:`x_1` = ``..._end`` and
:math:`K` = ``decay_iterations`` (0: constant :math:`x_0`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .. import _validation as check
from ..environments import ContextMDP, TextGenerationEnv
from ..log_probs import log_softmax
from ..schedules import ConstantSchedule, ExponentialSchedule, LinearSchedule
from ..selection import boltzmann, epsilon_greedy, greedy
from ..tabular_mdp import TabularMDP
from .base import Trainer

__all__ = ["EpisodeBatch", "TabularValueTrainer", "ValueConfig", "env_sizes", "play_episodes"]

EXPLORATIONS = ("epsilon_greedy", "boltzmann")
SCHEDULES = ("linear", "exponential")
DTYPES = ("float32", "float64")


@dataclass
class ValueConfig:
    """Hyper-parameters shared by the tabular value-method trainers (JSON-serialisable).

    Each field is documented once, by the ``#:`` comment above it; the algorithms' configs
    (:class:`fastlmrl.trainers.QLearningConfig`, ...) add only what differs for them.
    """

    #: Step size :math:`\alpha \in (0, 1]` of the TD / MC update (S&B's α, a learning rate).
    alpha: float = 0.1
    #: Discount :math:`\gamma \in [0, 1]` (default 0.9, the seed toy's: README, ContextMDP).
    gamma: float = 0.9
    #: The behaviour policy: ``"epsilon_greedy"`` or ``"boltzmann"``.
    exploration: str = "epsilon_greedy"
    #: ε at the start of the schedule, in [0, 1] (ε-greedy).
    epsilon_start: float = 1.0
    #: ε at the end of the schedule, in [0, 1] (ε-greedy).
    epsilon_end: float = 0.05
    #: τ at the start of the schedule, > 0 (Boltzmann).
    temperature_start: float = 1.0
    #: τ at the end of the schedule, > 0 (Boltzmann).
    temperature_end: float = 0.1
    #: K, iterations (batches of episodes) to go from start to end (0: constant).
    decay_iterations: int = 100
    #: ``"linear"`` or ``"exponential"`` (module docstring).
    schedule: str = "linear"
    #: Initial value of every table entry (optimistic values explore, S&B §2.6); rows of terminal
    #: states of a :class:`fastlmrl.ContextMDP` start at 0 (their value by definition).
    initial_q: float = 0.0
    #: Table dtype, ``"float32"`` or ``"float64"`` (arithmetic is float64 either way).
    dtype: str = "float64"
    #: Safety cut per episode, in steps (treated as a truncation, see module docstring).
    max_episode_steps: int = 10_000
    #: β > 0 of the behaviour policy around a language model (module docstring; used only when the
    #: trainer is given a :class:`fastlmrl.tasks.TextTask`), in reward units: the coefficient TRL
    #: calls ``beta`` (only ``kl_coef`` is accepted here).
    kl_coef: float = 0.1


def _choice(value: object, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise TypeError(f"config.{name} must be a str, got {type(value).__name__}")
    if value not in allowed:
        raise ValueError(f"config.{name} must be one of {allowed}, got {value!r}")
    return value


def validate_common(cfg: Any, *, alpha_optional: bool = False) -> None:
    """Check the :class:`ValueConfig` fields; ValueError / TypeError naming ``config.<field>``."""
    if cfg.alpha is None and alpha_optional:
        pass
    else:
        check.real(cfg.alpha, "config.alpha", 0.0, 1.0, low_open=True)
    check.real(cfg.gamma, "config.gamma", 0.0, 1.0)
    _choice(cfg.exploration, "exploration", EXPLORATIONS)
    _choice(cfg.schedule, "schedule", SCHEDULES)
    _choice(cfg.dtype, "dtype", DTYPES)
    check.real(cfg.epsilon_start, "config.epsilon_start", 0.0, 1.0)
    check.real(cfg.epsilon_end, "config.epsilon_end", 0.0, 1.0)
    check.real(cfg.temperature_start, "config.temperature_start", 0.0, None, low_open=True)
    check.real(cfg.temperature_end, "config.temperature_end", 0.0, None, low_open=True)
    check.positive_int(cfg.decay_iterations, "config.decay_iterations", 0)
    check.real(cfg.initial_q, "config.initial_q")
    check.positive_int(cfg.max_episode_steps, "config.max_episode_steps", 1)
    check.real(cfg.kl_coef, "config.kl_coef", 0.0, None, low_open=True)
    make_schedule(cfg)  # the exponential schedule needs positive ends


def make_schedule(cfg: Any) -> ConstantSchedule | LinearSchedule | ExponentialSchedule:
    """The exploration schedule of ``cfg`` (a callable of the iteration number)."""
    if cfg.exploration == "epsilon_greedy":
        start, end, name = cfg.epsilon_start, cfg.epsilon_end, "epsilon"
    else:
        start, end, name = cfg.temperature_start, cfg.temperature_end, "temperature"
    start, end = float(start), float(end)
    if cfg.decay_iterations == 0 or start == end:
        return ConstantSchedule(start)
    if cfg.schedule == "linear":
        return LinearSchedule(start, end, cfg.decay_iterations)
    if start <= 0.0 or end <= 0.0:
        raise ValueError(
            f"config.schedule='exponential' needs {name}_start > 0 and "
            f"{name}_end > 0, got {start} and {end}"
        )
    decay = math.exp(math.log(end / start) / cfg.decay_iterations)
    return ExponentialSchedule(start, end, decay)


def env_sizes(env: ContextMDP | TextGenerationEnv | TabularMDP) -> tuple[int, int]:
    """(number of states, number of actions) of a fastlmrl environment.

    :class:`fastlmrl.ContextMDP`: ``(num_states, num_actions)`` (the END state included);
    :class:`fastlmrl.TabularMDP`: ``(num_states, num_actions)`` (no extra state);
    :class:`fastlmrl.TextGenerationEnv`: ``(num_contexts, vocab_size)`` = ``(V**k, V)``.
    """
    if isinstance(env, ContextMDP):
        return env.num_states, env.num_actions
    if isinstance(env, TextGenerationEnv):
        return env.num_contexts, env.vocab_size
    if isinstance(env, TabularMDP):
        return env.num_states, env.num_actions
    raise TypeError(
        f"env must be a fastlmrl ContextMDP or TextGenerationEnv (or TabularMDP), got "
        f"{type(env).__name__}"
    )


@dataclass
class EpisodeBatch:
    """What :func:`play_episodes` saw: one entry per row (= per episode).

    Attributes
    ----------
    returns : (B,) float64, the undiscounted return :math:`R_1 + \\dots + R_T` of each episode.
    lengths : (B,) int64, the number of steps ``T`` of each episode.
    truncated : (B,) bool, ended by a time limit (or the trainer's safety cut), not terminated.
    steps : the total number of transitions, ``lengths.sum()``.
    """

    returns: np.ndarray  #: (B,) float64, undiscounted sum of the rewards R_1 + ... + R_T
    lengths: np.ndarray  #: (B,) int64, number of steps T
    truncated: np.ndarray  #: (B,) bool, ended by a time limit (or the safety cut), not terminated
    steps: int  #: total number of transitions

    def metrics(self) -> dict[str, float | int]:
        """``reward`` (mean return), ``episode_length`` (mean T), ``truncated`` (fraction),
        ``episodes`` (B) and ``tokens`` (steps) of the batch (0.0 means for an empty batch)."""
        n = self.returns.shape[0]
        return {
            "reward": float(self.returns.mean()) if n else 0.0,
            "episode_length": float(self.lengths.mean()) if n else 0.0,
            "truncated": float(self.truncated.mean()) if n else 0.0,
            "episodes": n,
            "tokens": int(self.steps),
        }


def play_episodes(
    env: Any,
    stream: Any,
    max_steps: int,
    select: Callable[[np.ndarray], ArrayLike],
    learn: Callable[..., Any] | None = None,
    select_next: bool = False,
) -> EpisodeBatch:
    """Run one batch of B episodes (module docstring).

    ``select(states) -> actions`` picks :math:`A_t` for the running rows.  After each
    ``env.step``, ``learn(rows, s, a, r, s2, terminated, truncated)`` receives the transitions
    :math:`(S_t, A_t, R_{t+1}, S_{t+1})` of the rows that were running (``rows`` their indices,
    in increasing order).  With ``select_next`` (SARSA), ``learn`` returns the next actions
    :math:`A_{t+1}` of those rows (ignored for rows that ended), which are then taken at the next
    step instead of calling ``select`` again.
    """
    obs, _ = env.reset(seed=stream)
    obs = np.asarray(obs, dtype=np.int64)
    n_rows = obs.shape[0]
    active = np.ones(n_rows, dtype=bool)
    actions = np.zeros(n_rows, dtype=np.int64)
    returns = np.zeros(n_rows)
    lengths = np.zeros(n_rows, dtype=np.int64)
    truncated = np.zeros(n_rows, dtype=bool)
    steps = 0
    for t in range(max_steps):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        if t == 0 or not select_next:
            actions[rows] = select(obs[rows])
        nxt, rew, term, trunc, _ = env.step(actions)
        nxt = np.asarray(nxt, dtype=np.int64)
        s, a, r, s2 = obs[rows], actions[rows], rew[rows], nxt[rows]
        te = np.asarray(term[rows], dtype=bool)
        tr = np.asarray(trunc[rows], dtype=bool)
        if t == max_steps - 1:
            tr = tr | ~te  # the safety cut: a time limit of the trainer's own
        if learn is not None:
            out = learn(rows, s, a, r, s2, te, tr)
            if select_next:
                actions[rows] = out
        returns[rows] += r
        lengths[rows] += 1
        truncated[rows[tr]] = True
        active[rows[te | tr]] = False
        obs = nxt
        steps += rows.size
    return EpisodeBatch(returns=returns, lengths=lengths, truncated=truncated, steps=steps)


class TabularValueTrainer(Trainer):
    """Base class of the tabular value-method trainers: a Q table ``q`` (S, A) of
    ``config.dtype``, exploration from ``q``, one batch of episodes per :meth:`iteration`.

    Parameters
    ----------
    env : :class:`fastlmrl.ContextMDP`, :class:`fastlmrl.TabularMDP` (stochastic; γ = 1 only
        when :meth:`fastlmrl.TabularMDP.episodic_problem` finds none),
        :class:`fastlmrl.TextGenerationEnv`, or a
        :class:`fastlmrl.tasks.TextTask` (its environment, explored around its reference LM:
        module docstring).  The state is the context id; S and A as in :func:`env_sizes`.
    config : the algorithm's dataclass (default: its defaults).
    seed : int, the only source of randomness (environment and exploration).
    """

    algorithm = "tabular_value"
    # the config dataclass (Any: trainers/base.py declares Trainer.Config = None)
    Config: Any = ValueConfig
    alpha_optional = False  # Monte Carlo: alpha=None means sample averages

    def __init__(self, env: Any, config: Any = None, seed: int = 0) -> None:
        if config is None and self.Config is not None:
            config = self.Config()
        super().__init__(config, seed)
        self.prior = None  # log pi_ref (S, A) float64 when started from a language model
        if hasattr(env, "env") and hasattr(env, "reference"):  # a TextTask
            reference = np.asarray(env.reference, dtype=np.float64)
            env = env.env
            if reference.shape != env_sizes(env):
                raise ValueError(
                    f"vocabulary mismatch: reference table {reference.shape} vs "
                    f"the environment's {env_sizes(env)}"
                )
            self.prior = log_softmax(reference)
        self.num_states, self.num_actions = env_sizes(env)
        self.env = env
        self.validate_config(config)
        if isinstance(env, TabularMDP) and float(config.gamma) == 1.0:
            problem = env.episodic_problem()
            if problem is not None:
                raise ValueError(
                    f"config.gamma = 1 needs an episodic MDP in which every policy "
                    f"terminates (or pays -inf for not terminating): {problem}"
                )
        self.schedule = make_schedule(config)
        self.dtype = np.dtype(config.dtype)
        self._terminal_rows = self._terminal_mask(env)
        self.init_tables()

    # --- configuration --------------------------------------------------------------------------
    def validate_config(self, cfg: Any) -> None:
        """Check the configuration (subclasses extend)."""
        validate_common(cfg, alpha_optional=self.alpha_optional)

    @staticmethod
    def _terminal_mask(env: Any) -> np.ndarray:
        if isinstance(env, ContextMDP):
            return env.to_arrays()[2]
        return np.zeros(env_sizes(env)[0], dtype=bool)

    def new_table(self) -> np.ndarray:
        """A fresh (S, A) table: ``initial_q`` everywhere, 0 on terminal states."""
        q = np.full((self.num_states, self.num_actions), self.config.initial_q, dtype=self.dtype)
        q[self._terminal_rows] = 0.0
        return q

    def init_tables(self) -> None:
        """Create the tables (``q``; subclasses add theirs)."""
        self.q = self.new_table()

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of the trainer's state, saved in a checkpoint."""
        return {"q": self.q}

    # --- exploration ----------------------------------------------------------------------------
    def exploration_metrics(self, metrics: dict[str, Any], param: float) -> None:
        """Record the exploration parameter (``kl_coef`` when exploring around a LM)."""
        if self.prior is not None:
            metrics["kl_coef"] = float(self.config.kl_coef)
        else:
            metrics[self.exploration_name] = param

    @property
    def exploration_name(self) -> str:
        """``"epsilon"`` or ``"temperature"``: the metric name of the exploration parameter."""
        return "epsilon" if self.config.exploration == "epsilon_greedy" else "temperature"

    def exploration_value(self) -> float:
        """ε or τ for the current iteration (the schedule at ``iterations_done``)."""
        return float(self.schedule(self.iterations_done))

    def policy_logits(self, states: ArrayLike) -> np.ndarray:
        """(n, A) float64 logits of the behaviour policy around the reference,
        :math:`\\log\\pi_{ref}(\\cdot|s) + Q(s, \\cdot)/\\beta` (a trainer started from a
        language model only)."""
        if self.prior is None:
            raise ValueError(
                "policy_logits needs a trainer started from a language model (a TextTask)"
            )
        states = np.asarray(states, dtype=np.int64)
        return self.prior[states] + self.q[states].astype(np.float64) / self.config.kl_coef

    def select(self, states: ArrayLike, param: float) -> np.ndarray:
        """Behaviour actions for ``states`` from :attr:`q` (draws from ``self.stream``)."""
        if self.prior is not None:  # Boltzmann around the LM: one uniform per row, as boltzmann
            logits = self.policy_logits(states)
            return boltzmann(logits, np.arange(logits.shape[0]), 1.0, self.stream)
        if self.config.exploration == "epsilon_greedy":
            return epsilon_greedy(self.q, states, param, self.stream)
        return boltzmann(self.q, states, param, self.stream)

    def greedy_actions(self, states: ArrayLike) -> np.ndarray:
        """:math:`\\arg\\max_a Q(s, a)` for each state (ties to the lowest token id); started
        from a language model: the mode of the behaviour policy, :math:`\\arg\\max_a
        \\log\\pi_{ref}(a|s) + Q(s, a)/\\beta`."""
        if self.prior is not None:
            logits = self.policy_logits(check.ids(states, "states"))
            return greedy(logits, np.arange(logits.shape[0]))
        return greedy(self.q, states)

    def greedy_policy(self) -> np.ndarray:
        """(S,) int64: the greedy token of every state."""
        if self.prior is not None:
            return self.greedy_actions(np.arange(self.num_states, dtype=np.int64))
        return greedy(self.q, np.arange(self.num_states, dtype=np.int64))

    def sample(self, num_sequences: int, seed: Any) -> Any:
        """Generate with the behaviour policy around the reference (a trainer started from a
        language model): a :class:`fastlmrl.environments.RolloutBatch` of ``num_sequences``
        sequences from a fresh stream ``seed`` (not the trainer's)."""
        logits = self.policy_logits(np.arange(self.num_states, dtype=np.int64))
        return self.env.rollout(logits, seed, num_sequences=num_sequences)

    # --- the loop -------------------------------------------------------------------------------
    select_next = False  # SARSA picks A_{t+1} before its update

    def learn(  # pragma: no cover
        self,
        rows: np.ndarray,
        s: np.ndarray,
        a: np.ndarray,
        r: np.ndarray,
        s2: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        param: float,
    ) -> Any:
        """Update from one step's transitions; return the TD errors (and next actions when
        :attr:`select_next`)."""
        raise NotImplementedError

    def iteration(self) -> dict[str, Any]:
        """One batch of B episodes with learning; returns its metrics (module docstring)."""
        param = self.exploration_value()
        td_sum = [0.0]

        def learn(
            rows: np.ndarray,
            s: np.ndarray,
            a: np.ndarray,
            r: np.ndarray,
            s2: np.ndarray,
            te: np.ndarray,
            tr: np.ndarray,
        ) -> np.ndarray | None:
            out = self.learn(rows, s, a, r, s2, te, tr, param)
            td, nxt = out if self.select_next else (out, None)
            td_sum[0] += float(np.abs(td.astype(np.float64)).sum())
            return nxt

        batch = play_episodes(
            self.env,
            self.stream,
            self.config.max_episode_steps,
            lambda states: self.select(states, param),
            learn,
            select_next=self.select_next,
        )
        metrics = batch.metrics()
        self.exploration_metrics(metrics, param)
        metrics["td_error"] = td_sum[0] / batch.steps if batch.steps else 0.0
        return metrics
