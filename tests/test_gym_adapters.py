"""Gymnasium adapters: check_env on the Env adapter, VectorEnv smoke test (shapes, autoreset)."""

import subprocess
import sys
import textwrap
import warnings

import gymnasium as gym  # the test extra installs it: CI must run these tests, never skip them
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env  # noqa: E402
from gymnasium.vector import AutoresetMode, VectorEnv  # noqa: E402

from fastlmrl import ContextMDP, TextGenerationEnv  # noqa: E402
from fastlmrl.gym_adapters import TokenEnv, TokenVectorEnv  # noqa: E402
from fastlmrl.rewards import TargetMatch  # noqa: E402

PROMPTS = [[2, 3], [4], []]


def _text_env(num_envs=1, T=4):
    return TextGenerationEnv(
        PROMPTS,
        vocab_size=6,
        order=2,
        max_new_tokens=T,
        num_envs=num_envs,
        reward=TargetMatch([2, 3]),
    )


@pytest.mark.parametrize(
    "make",
    [lambda: TokenEnv(), lambda: TokenEnv(_text_env()), lambda: TokenEnv(ContextMDP(max_steps=5))],
    ids=["toy", "text", "toy-limit"],
)
def test_check_env_passes(backend, make):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # gymnasium's checker reports problems as warnings
        check_env(make(), skip_render_check=True)


def test_env_adapter_episode(backend):
    env = TokenEnv()
    assert env.observation_space == gym.spaces.Discrete(3)
    assert env.action_space == gym.spaces.Discrete(2)
    obs, info = env.reset(seed=0)
    assert obs == 0 and info == {}
    obs, r, term, trunc, _ = env.step(1)
    assert (obs, r, term, trunc) == (1, 2.0, False, False)
    obs, r, term, trunc, _ = env.step(0)
    assert (obs, r, term, trunc) == (2, 1.0, True, False)
    assert isinstance(term, bool) and isinstance(r, float)
    with pytest.raises(RuntimeError, match="call reset"):
        env.step(0)
    env.reset()
    with pytest.raises(ValueError, match="not in Discrete"):
        env.step(5)


def test_env_adapter_seeding_is_deterministic():
    env = TokenEnv(_text_env())
    first = [env.reset(seed=s)[1]["prompt_ids"] for s in range(20)]
    again = [env.reset(seed=s)[1]["prompt_ids"] for s in range(20)]
    assert first == again and len(set(first)) > 1
    obs, info = env.reset(options={"prompt_ids": [2]})
    assert obs == 0 and info["prompt_ids"] == 2


def test_env_adapter_rejects_batches():
    with pytest.raises(ValueError, match="num_envs=1"):
        TokenEnv(ContextMDP(num_envs=2))
    with pytest.raises(TypeError, match="ContextMDP or TextGenerationEnv"):
        TokenEnv(object())


def test_vector_env_smoke(backend):
    venv = TokenVectorEnv(_text_env(num_envs=5, T=2))
    assert isinstance(venv, VectorEnv)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert venv.num_envs == 5
    assert venv.single_observation_space == gym.spaces.Discrete(36)
    assert venv.single_action_space == gym.spaces.Discrete(6)
    obs, info = venv.reset(seed=3)
    assert obs.shape == (5,) and obs.dtype == np.int64 and obs in venv.observation_space
    assert info["prompt_ids"].shape == (5,) and info["_prompt_ids"].all()
    obs2, _ = venv.reset(seed=3)
    np.testing.assert_array_equal(obs, obs2)

    actions = np.array([1, 2, 3, 2, 1])  # eos_id = 1 ends rows 0 and 4
    obs, rewards, term, trunc, info = venv.step(actions)
    assert obs.shape == rewards.shape == term.shape == trunc.shape == (5,)
    assert rewards.dtype == np.float64 and term.dtype == bool and trunc.dtype == bool
    np.testing.assert_array_equal(term, [True, False, False, False, True])
    assert not trunc.any()
    obs, rewards, term, trunc, info = venv.step(np.array([3, 3, 3, 3, 3]))
    np.testing.assert_array_equal(trunc, [False, True, True, True, False])  # 2 tokens: truncated
    assert not term.any()
    # rows 0 and 4 were autoreset (NEXT_STEP): back at their prompts' contexts, reward 0
    prompt_ctx = [2 * 6 + 3, 4, 0]
    for b in (0, 4):
        assert obs[b] == prompt_ctx[info["prompt_ids"][b]] and rewards[b] == 0
    obs, rewards, term, trunc, _ = venv.step(np.zeros(5, np.int64))
    assert not term[1:4].any() and not trunc[1:4].any() and not rewards[1:4].any()
    venv.close()


def test_vector_env_on_context_mdp(backend):
    venv = TokenVectorEnv(ContextMDP(num_envs=4))
    obs, _ = venv.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0, 0, 0])
    obs, r, term, trunc, _ = venv.step(venv.action_space.sample())
    np.testing.assert_array_equal(obs, [1, 1, 1, 1])
    with pytest.raises(TypeError, match="seed must be an int"):
        venv.reset(seed=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="actions must have length 4"):
        venv.step(np.zeros(3, np.int64))


def test_clear_import_error_without_gymnasium():
    code = textwrap.dedent("""
        import sys
        sys.modules["gymnasium"] = None   # simulate a missing optional extra
        import fastlmrl                   # the core package does not need it
        try:
            import fastlmrl.gym_adapters
        except ImportError as exc:
            print("MSG:", exc)
    """)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'fastlmrl[gym]'" in out


def test_token_env_wraps_a_tabular_mdp(backend):
    """A TabularMDP built from FrozenLake's table is a valid gymnasium.Env again (TokenEnv)."""
    from fastlmrl.gym_adapters import tabular_mdp_from_gymnasium

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(TokenEnv(tabular_mdp_from_gymnasium("FrozenLake-v1")), skip_render_check=True)


def test_tabular_builder_reads_wrapped_envs_and_time_limits():
    from fastlmrl.gym_adapters import tabular_mdp_from_gymnasium

    env = gym.make("FrozenLake-v1", is_slippery=False)  # TimeLimit(OrderEnforcing(...)) wrapper
    mdp = tabular_mdp_from_gymnasium(env, num_envs=3)
    assert (mdp.num_states, mdp.num_actions, mdp.num_envs, mdp.max_steps) == (16, 4, 3, 100)
    assert (mdp.probabilities == 1.0).all()  # deterministic lake: one outcome per pair
    assert tabular_mdp_from_gymnasium(env, max_steps=0).max_steps == 0
    assert tabular_mdp_from_gymnasium("CliffWalking-v1").max_steps == 0
