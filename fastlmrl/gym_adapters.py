"""Gymnasium adapters for the fastlmrl token environments (optional: ``pip install fastlmrl[gym]``).

* :class:`TokenEnv` — a ``gymnasium.Env`` over one sequence of a :class:`fastlmrl.ContextMDP` or
  :class:`fastlmrl.TextGenerationEnv` built with ``num_envs=1``; passes
  ``gymnasium.utils.env_checker.check_env``.
* :class:`TokenVectorEnv` — a ``gymnasium.vector.VectorEnv`` over all B sequences of such an
  environment, stepped by one kernel call per step; autoreset mode ``NEXT_STEP`` (Gymnasium 1.x's
  default): the step after a sub-environment terminated or was truncated resets it, ignoring its
  action and returning reward 0 and both flags False.

* :func:`tabular_mdp_from_gymnasium` — a :class:`fastlmrl.TabularMDP` (stochastic, batched,
  stepped by compiled kernels) built from a toy-text environment's transition table
  ``env.unwrapped.P`` (FrozenLake, CliffWalking, Taxi), for the tabular trainers and for
  planning (``.to_dense()``, ``.value_iteration()``).

Observations are context ids (``Discrete(num_states)`` / ``Discrete(V**k)``), actions token ids
(``Discrete(V)``).  This module is not imported by ``import fastlmrl``.
"""

from __future__ import annotations

try:
    import gymnasium as gym
    from gymnasium import spaces
    from gymnasium.vector import AutoresetMode, VectorEnv
    from gymnasium.vector.utils import batch_space
except ImportError as exc:  # pragma: no cover - exercised only without gymnasium
    raise ImportError(
        "fastlmrl.gym_adapters needs gymnasium (an optional extra): pip install 'fastlmrl[gym]'"
    ) from exc

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from .environments import ContextMDP, TextGenerationEnv
from .tabular_mdp import TabularMDP

__all__ = ["TokenEnv", "TokenVectorEnv", "tabular_mdp_from_gymnasium"]


def tabular_mdp_from_gymnasium(
    env: Any, *, num_envs: int = 1, max_steps: int | None = None
) -> TabularMDP:
    """A :class:`fastlmrl.TabularMDP` with the dynamics of a Gymnasium toy-text environment.

    ``env`` is an environment (``gymnasium.make("FrozenLake-v1", is_slippery=True)``, wrappers
    allowed) or its id (a str, made with default arguments).  Read from ``env.unwrapped``:

    * ``P[s][a] = [(probability, next_state, reward, terminated), ...]`` -- the outcome lists,
      stochastic ones included (slippery FrozenLake: three outcomes of probability 1/3);
    * ``initial_state_distrib`` (or ``isd``) -- the distribution of :math:`S_0` (state 0 if
      absent).

    ``max_steps`` defaults to the registered time limit ``env.spec.max_episode_steps``
    (FrozenLake-v1: 100, Taxi: 200, CliffWalking: none), so episodes are truncated as
    Gymnasium's ``TimeLimit`` does; pass ``max_steps=0`` for no limit.  The table has
    ``observation_space.n`` rows: a terminating outcome ends the episode (no extra state).
    """
    if isinstance(env, str):
        env = gym.make(env)
    base = getattr(env, "unwrapped", env)
    table = getattr(base, "P", None)
    if table is None:
        raise TypeError(
            f"env: {type(base).__name__} has no transition table P (a Gymnasium "
            "toy-text environment such as FrozenLake, CliffWalking or Taxi has one)"
        )
    init = getattr(base, "initial_state_distrib", None)
    if init is None:
        init = getattr(base, "isd", None)
    if max_steps is None:
        spec = getattr(env, "spec", None)
        max_steps = getattr(spec, "max_episode_steps", None) if spec is not None else None
    elif max_steps == 0:
        max_steps = None
    space = getattr(base, "observation_space", None)
    mdp = TabularMDP(table, init, num_envs=num_envs, max_steps=max_steps)
    if isinstance(space, spaces.Discrete) and int(space.n) != mdp.num_states:
        raise ValueError(
            f"env: observation_space.n = {int(space.n)} but P has {mdp.num_states} states"
        )
    return mdp


def _sizes(env: Any) -> tuple[int, int]:
    """(number of observation values, number of actions) of a fastlmrl environment."""
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


def _check_seed(seed: Any) -> int | None:
    """None, or an int in [0, 2**64) as a Python int (Gymnasium's seeding takes no NumPy int and
    raises its own error type)."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed must be in [0, 2**64), got {seed}")
    return int(seed)


def _info_one(info: dict[str, Any]) -> dict[str, Any]:
    return {k: v[0].item() if isinstance(v, np.ndarray) else v for k, v in info.items()}


class TokenEnv(gym.Env):
    """A single token environment as a ``gymnasium.Env`` (default: the toy :class:`ContextMDP`).

    ``TokenEnv(env=None)``: ``env`` a :class:`fastlmrl.ContextMDP`,
    :class:`fastlmrl.TextGenerationEnv` or :class:`fastlmrl.TabularMDP` with ``num_envs=1``.
    Observations are ``Discrete(S)`` state (context) ids, actions ``Discrete(A)`` token ids;
    ``step`` returns ``(obs, reward, terminated, truncated, info)`` with Gymnasium's meanings
    (``reward`` the :math:`R_{t+1}` that follows the action, a float).  Attribute ``env``: the
    wrapped environment.

    ``reset(seed=...)`` seeds :attr:`np_random` (``super().reset``) and draws the fastlmrl stream
    seed from it, so equal seeds give equal episodes.  Stepping a finished episode raises
    RuntimeError (call ``reset``).
    """

    metadata = {"render_modes": []}

    def __init__(self, env: Any = None) -> None:
        if env is None:
            env = ContextMDP()
        n_obs, n_actions = _sizes(env)
        if env.num_envs != 1:
            raise ValueError(
                f"TokenEnv wraps an environment with num_envs=1, got {env.num_envs} "
                "(use TokenVectorEnv)"
            )
        self.env = env
        self.observation_space = spaces.Discrete(n_obs)
        self.action_space = spaces.Discrete(n_actions)
        self.render_mode = None
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.int64, dict[str, Any]]:
        """Start an episode: ``(S_0, info)``."""
        super().reset(seed=_check_seed(seed))
        stream_seed = int(self.np_random.integers(0, 2**63))
        obs, info = self.env.reset(seed=stream_seed, options=options)
        self._done = False
        return np.int64(obs[0]), _info_one(info)

    def step(self, action: Any) -> tuple[np.int64, float, bool, bool, dict[str, Any]]:
        """Take token ``action``: ``(S_{t+1}, R_{t+1}, terminated, truncated, info)``."""
        if self._done:
            raise RuntimeError("the episode is over (or was never started): call reset()")
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        obs, reward, terminated, truncated, info = self.env.step(np.array([action], np.int64))
        term, trunc = bool(terminated[0]), bool(truncated[0])
        self._done = term or trunc
        return np.int64(obs[0]), float(reward[0]), term, trunc, _info_one(info)


class TokenVectorEnv(VectorEnv):
    """All B sequences of a fastlmrl token environment as a ``gymnasium.vector.VectorEnv``.

    ``reset(seed=int)`` starts the environment's random stream at that seed (a list of per-env
    seeds is not supported: the B sequences share one counter-based stream).  Infos hold
    ``prompt_ids`` (with the ``_prompt_ids`` mask) for a :class:`TextGenerationEnv`.

    ``TokenVectorEnv(env)``: ``env`` a fastlmrl token environment (its ``num_envs`` = B
    sub-environments); next-step autoreset (``AutoresetMode.NEXT_STEP``), as the wrapped
    environment.  Attribute ``env``: the wrapped environment.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, env: Any) -> None:
        n_obs, n_actions = _sizes(env)
        self.env = env
        self.num_envs = env.num_envs
        self.single_observation_space = spaces.Discrete(n_obs)
        self.single_action_space = spaces.Discrete(n_actions)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset all B sequences: ``(obs (B,), infos)``."""
        if seed is not None and (
            isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer))
        ):
            raise TypeError("seed must be an int (one stream for all sub-environments) or None")
        seed = _check_seed(seed)
        if seed is not None:
            self._np_random, self._np_random_seed = gym.utils.seeding.np_random(int(seed))
        obs, info = self.env.reset(seed=None if seed is None else int(seed), options=options)
        return obs, self._infos(info)

    def step(
        self, actions: ArrayLike
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step all B sequences: ``(obs, rewards, terminated, truncated, infos)``, (B,) each."""
        obs, rewards, terminated, truncated, info = self.env.step(np.asarray(actions))
        return obs, rewards, terminated, truncated, self._infos(info)

    def _infos(self, info: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in info.items():
            out[key] = value
            out["_" + key] = np.ones(self.num_envs, dtype=bool)
        return out
