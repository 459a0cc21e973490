"""Ready-made tasks: a language model fitted on a corpus, a reward, and a batched environment.

:func:`make_text_task` is what ``fastlmrl demo`` and ``fastlmrl train --env text`` use: a
character n-gram LM fitted on the default corpus (or ``corpus``) gives the initial policy table and
the frozen reference table; the environment generates ``max_new_tokens`` characters after a prompt
(a sentence opening from the corpus); the reward counts lexicon words in the generated text.
:func:`make_toy_task` is the seed toy (:class:`fastlmrl.ContextMDP`).  :func:`make_gym_task` is a
Gymnasium toy-text MDP (FrozenLake, CliffWalking, Taxi) as a stochastic :class:`fastlmrl.TabularMDP`
for the tabular value methods (needs the ``gym`` extra).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import DTypeLike

from .corpus import load_corpus, train_test_split
from .environments import ContextMDP, TextGenerationEnv
from .ngram import NGramLM
from .rewards import KeywordReward
from .tokenizers import CharTokenizer

__all__ = [
    "DEFAULT_LEXICON",
    "GYM_TASKS",
    "GymTask",
    "TextTask",
    "ToyTask",
    "letter_ids",
    "make_gym_task",
    "make_text_task",
    "make_toy_task",
]

#: Words the default text task rewards (all occur in the default corpus, rarely).
DEFAULT_LEXICON = ("happy", "gentle", "friendly", "brave", "bright", "clever", "kind")


@dataclass
class TextTask:
    """Everything a policy-gradient trainer needs for a text task."""

    tokenizer: CharTokenizer
    lm: NGramLM
    env: TextGenerationEnv
    reference: np.ndarray  #: (V**k, V) frozen reference log-probability table (read-only)
    initial_policy: np.ndarray  #: (V**k, V) writable copy: the policy to fine-tune
    lexicon: tuple
    held_out: str = field(repr=False, default="")
    name: str = "text"

    @property
    def num_contexts(self) -> int:
        return self.reference.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.reference.shape[1]

    def decode(self, tokens: Sequence[int] | np.ndarray) -> str:
        return self.tokenizer.decode(tokens)

    def prompt_text(self, i: int) -> str:
        return self.tokenizer.decode(self.env.prompt(i))


@dataclass
class ToyTask:
    """The seed toy as a task for the tabular value-method trainers."""

    env: ContextMDP
    name: str = "toy"


def _prompts(text: str, tokenizer: CharTokenizer, max_prompts: int) -> list:
    """Distinct sentence openings (first word and a space) of the corpus, most frequent first."""
    counts: dict = {}
    for line in text.splitlines():
        words = line.split()
        if words:
            opening = words[0] + " "
            counts[opening] = counts.get(opening, 0) + 1
    openings = sorted(counts, key=lambda w: (-counts[w], w))[:max_prompts]
    return [tokenizer.encode(w) for w in openings]


def letter_ids(tokenizer: CharTokenizer) -> np.ndarray:
    """Ids of the tokenizer's letters (characters with ``str.isalpha``): the word tokens."""
    ids = [
        i
        for i in range(tokenizer.vocab_size)
        if len(tokenizer.decode([i])) == 1 and tokenizer.decode([i]).isalpha()
    ]
    return np.array(ids, dtype=np.int64)


def make_text_task(
    corpus: str | None = None,
    *,
    order: int = 2,
    lexicon: Sequence[str] = DEFAULT_LEXICON,
    max_new_tokens: int = 48,
    num_envs: int = 256,
    max_prompts: int = 16,
    smoothing: str = "kneser_ney",
    dtype: DTypeLike = np.float32,
    reward_per_token: bool = True,
) -> TextTask:
    """Build the default text task (``corpus`` is a file path; None = the default corpus).

    The LM has n-gram order ``order + 1`` so that its table is over ``order``-token contexts, the
    state of the environment.  The reward is a :class:`fastlmrl.rewards.KeywordReward`: the score
    of a response is the number of lexicon words in it, whole words only: an occurrence counts
    when the characters around it are not letters (``str.isalpha``) or are the edges of the
    response, so "kind" pays in "a kind owl." but not in "kindly" or "skind".

    ``reward_per_token=True`` (default) pays the score as it is earned: +1 at the last letter of
    a word (:math:`R_{t+1}` after the token that completes it), taken back (-1) at a letter that
    turns it into a longer word; the rewards of a response sum to its score.  Credit then reaches
    the tokens that wrote the word directly, instead of through 48 steps of a GAE(λ) chain whose
    critic (a table over ``order``-character contexts) cannot foresee the word count (with a
    terminal score and λ = 0.95 PPO barely learns: λ^30 ≈ 0.2).  ``False``: the score is paid
    once, after the last token.
    """
    text = load_corpus(corpus)
    train, held_out = train_test_split(text, 0.1)
    tokenizer = CharTokenizer(text)
    lm = NGramLM(order=order + 1, smoothing=smoothing).fit_text(train, tokenizer)
    policy, reference = lm.policy_tables(order, dtype=dtype)
    keywords = {}
    for word in lexicon:
        ids = tokenizer.encode(word)
        if (ids == tokenizer.unk_id).any():
            raise ValueError(f"lexicon word {word!r} uses characters that are not in the corpus")
        keywords[tuple(int(t) for t in ids)] = 1.0
    env = TextGenerationEnv(
        _prompts(train, tokenizer, max_prompts),
        tokenizer.vocab_size,
        order=order,
        max_new_tokens=max_new_tokens,
        num_envs=num_envs,
        bos_id=tokenizer.bos_id,
        eos_id=tokenizer.eos_id,
        reward=KeywordReward(
            keywords, per_token=reward_per_token, word_tokens=letter_ids(tokenizer)
        ),
    )
    return TextTask(
        tokenizer=tokenizer,
        lm=lm,
        env=env,
        reference=reference,
        initial_policy=policy,
        lexicon=tuple(lexicon),
        held_out=held_out,
    )


def make_toy_task(num_envs: int = 64) -> ToyTask:
    """The seed toy: contexts x1 -> x2, tokens v1, v2 with rewards 1 and 2 (see ContextMDP)."""
    return ToyTask(env=ContextMDP(num_envs=num_envs))


#: Short names of the Gymnasium toy-text tasks (``fastlmrl train --env frozenlake``).
GYM_TASKS = {"frozenlake": "FrozenLake-v1", "cliffwalking": "CliffWalking-v1", "taxi": "Taxi-v4"}


@dataclass
class GymTask:
    """A Gymnasium toy-text MDP as a task for the tabular value-method trainers."""

    env: object  #: the :class:`fastlmrl.TabularMDP`
    name: str
    env_id: str = ""


def make_gym_task(env_id: str, num_envs: int = 64, max_steps: int | None = None) -> GymTask:
    """A :class:`GymTask` for a Gymnasium toy-text environment: ``env_id`` is a Gymnasium id
    (``"FrozenLake-v1"``) or a short name of :data:`GYM_TASKS`; its transition table becomes a
    :class:`fastlmrl.TabularMDP` of ``num_envs`` sequences
    (:func:`fastlmrl.gym_adapters.tabular_mdp_from_gymnasium`; ``max_steps`` defaults to the
    registered time limit)."""
    if not isinstance(env_id, str):
        raise TypeError(f"env_id must be a str, got {type(env_id).__name__}")
    from .gym_adapters import gym, tabular_mdp_from_gymnasium

    gym_id = GYM_TASKS.get(env_id.lower(), env_id)
    if gym_id == "Taxi-v4" and "Taxi-v4" not in gym.registry:  # older Gymnasium
        gym_id = "Taxi-v3"
    if gym_id not in gym.registry:
        raise ValueError(
            f"env_id {env_id!r} is neither a short name ({', '.join(GYM_TASKS)}) "
            "nor a registered Gymnasium environment"
        )
    mdp = tabular_mdp_from_gymnasium(gym_id, num_envs=num_envs, max_steps=max_steps)
    short = {v: k for k, v in GYM_TASKS.items()}.get(gym_id, gym_id)
    return GymTask(env=mdp, name=short, env_id=gym_id)
