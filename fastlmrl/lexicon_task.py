"""The lexicon task of ``fastlmrl demo`` / ``--env text`` for neural policies:
``fastlmrl train --policy neural --task lexicon``.

**Prompts**: the corpus's sentence openings (a line's first word and a space, the ``max_prompts``
most frequent; :mod:`fastlmrl.tasks` uses the same ones for the table policies), drawn uniformly
with fastlmrl's counter-based generator.  ``split="train"`` draws openings of the training lines,
``"test"`` those of the held-out lines (:func:`fastlmrl.corpus.train_test_split`, the last 10 %
of the lines), ``"all"`` both.

**Reward** (:meth:`LexiconTask.reward`): the number of lexicon words in the completion, whole
words only -- an occurrence counts when the characters around it are not letters
(``str.isalpha``) or are the edges of the completion, as :class:`fastlmrl.rewards.KeywordReward`
counts them for the table policies ("kind" pays in "a kind owl." but not in "kindly").  Unlike
the verifiable tasks there is no single right answer: :meth:`LexiconTask.success` is the fraction
of completions with at least one lexicon word.
"""

from __future__ import annotations

import numpy as np

from .corpus import load_corpus, train_test_split
from .rng import RandomStream, uniforms

__all__ = ["LexiconTask", "count_whole_words"]


def count_whole_words(text: str, lexicon) -> int:
    """Occurrences in ``text`` of the words of ``lexicon`` as whole words (maximal runs of
    letters, ``str.isalpha``)."""
    words, count, run = set(lexicon), 0, []
    for ch in text + " ":
        if ch.isalpha():
            run.append(ch)
        else:
            if run and "".join(run) in words:
                count += 1
            run = []
    return count


def _openings(text: str, limit: int) -> list:
    counts: dict = {}
    for line in text.splitlines():
        words = line.split()
        if words:
            counts[words[0] + " "] = counts.get(words[0] + " ", 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:limit]


class LexiconTask:
    """Write lexicon words after a sentence opening (see the module docstring)."""

    name = "lexicon"

    def __init__(self, corpus: str | None = None, *, lexicon=None, max_prompts: int = 16):
        from .tasks import DEFAULT_LEXICON

        self.lexicon = tuple(DEFAULT_LEXICON if lexicon is None else lexicon)
        if not self.lexicon or not all(isinstance(w, str) and w.isalpha() for w in self.lexicon):
            raise ValueError(f"lexicon must be non-empty words of letters, got {self.lexicon!r}")
        train, held_out = train_test_split(load_corpus(corpus), 0.1)
        self._splits = {
            "train": _openings(train, max_prompts),
            "test": _openings(held_out, max_prompts),
        }
        self._splits["all"] = sorted(set(self._splits["train"]) | set(self._splits["test"]))

    def __repr__(self) -> str:
        return f"LexiconTask(lexicon={self.lexicon!r})"

    def prompts(self, n: int, seed: int = 0, *, split: str = "train") -> list:
        if split not in self._splits:
            raise ValueError(f"split must be one of {sorted(self._splits)}, got {split!r}")
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        pool = self._splits[split]
        picks = np.minimum(
            (uniforms(RandomStream(seed), int(n)) * len(pool)).astype(np.int64), len(pool) - 1
        )
        return [pool[i] for i in picks]

    def reward(self, prompts, completions, terminated=None) -> np.ndarray:
        completions = list(completions)
        if len(completions) != len(list(prompts)):
            raise ValueError(
                f"prompts and completions must have the same length, got "
                f"{len(list(prompts))} and {len(completions)}"
            )
        return np.array([float(count_whole_words(c, self.lexicon)) for c in completions])

    def success(self, prompts, completions, terminated=None) -> float:
        rewards = self.reward(prompts, completions, terminated)
        return float((rewards > 0).mean()) if rewards.size else 0.0
