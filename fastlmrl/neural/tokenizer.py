"""One tokenizer interface for the neural side: fastlmrl's tokenizers and Hugging Face's.

:class:`TokenizerAdapter` wraps either a fastlmrl :class:`~fastlmrl.CharTokenizer` /
:class:`~fastlmrl.WordTokenizer` or a Hugging Face tokenizer (``transformers``
``PreTrainedTokenizerBase``: ``PreTrainedTokenizerFast``, ``AutoTokenizer.from_pretrained(...)``)
and gives the rollout and trainer code the few things they need:

* ``encode(text) -> list[int]`` (no special tokens), ``decode(ids) -> str`` (special tokens
  dropped);
* ``vocab_size``, ``eos_token_id``, ``pad_token_id``, ``bos_token_id`` (None when the tokenizer
  has no beginning-of-sequence token);
* ``encode_prompts(texts)``: a left-padded batch (``input_ids``, ``attention_mask``; 0 marks
  padding) whose rows start with ``<bos>`` when the tokenizer has one -- generation appends to
  the right end of every row at once.

Padding id: the tokenizer's own pad token when it has one, else its end-of-sequence token (the
usual choice for GPT-2-style models; padded positions are masked, so the id never matters to the
model's output).  A fastlmrl tokenizer has ``<bos>`` = 0, ``<eos>`` = 1, ``<unk>`` = 2 and no pad
token, so it pads with ``<eos>`` = 1.

This module needs no PyTorch unless ``return_tensors="pt"`` is asked for.
"""

from __future__ import annotations

import numbers
import os
from typing import Any

import numpy as np

from ..tokenizers import _Tokenizer

__all__ = ["TokenizerAdapter", "as_tokenizer"]


def _is_hf_tokenizer(tok) -> bool:
    """True for a ``transformers`` tokenizer (checked by duck typing: no import of transformers)."""
    return all(
        hasattr(tok, a)
        for a in ("convert_tokens_to_ids", "decode", "encode", "eos_token_id", "pad_token_id")
    )


def _check_texts(texts, name: str) -> list:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of str, got a single str (wrap it in a list)")
    try:
        texts = list(texts)
    except TypeError:
        raise TypeError(f"{name} must be a list of str, got {type(texts).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"{name}[{i}] must be a str, got {type(t).__name__}")
    return texts


class TokenizerAdapter:
    """One interface over a fastlmrl tokenizer and a Hugging Face tokenizer.

    ``TokenizerAdapter(tok)``; :func:`as_tokenizer` returns ``tok`` itself when it is already an
    adapter.  ``adapter.tokenizer`` is the wrapped object, ``adapter.kind`` is ``"fastlmrl"`` or
    ``"huggingface"``.
    """

    tokenizer: Any  #: the wrapped fastlmrl or Hugging Face tokenizer
    kind: str

    def __init__(self, tokenizer):
        if isinstance(tokenizer, TokenizerAdapter):
            tokenizer = tokenizer.tokenizer
        if isinstance(tokenizer, _Tokenizer):
            self.kind = "fastlmrl"
            self._vocab_size = tokenizer.vocab_size
            self._bos = tokenizer.bos_id
            self._eos = tokenizer.eos_id
            self._pad = tokenizer.eos_id
            self._specials = frozenset((tokenizer.bos_id, tokenizer.eos_id))
        elif _is_hf_tokenizer(tokenizer):
            self.kind = "huggingface"
            self._vocab_size = int(len(tokenizer))
            self._bos = tokenizer.bos_token_id
            self._eos = tokenizer.eos_token_id
            if self._eos is None:
                raise ValueError(
                    "tokenizer has no end-of-sequence token (eos_token_id is None): "
                    "set tokenizer.eos_token before generating with it"
                )
            self._pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self._eos
            self._specials = frozenset(
                int(i) for i in getattr(tokenizer, "all_special_ids", ()) if i is not None
            )
        else:
            raise TypeError(
                f"tokenizer must be a fastlmrl CharTokenizer / WordTokenizer or a Hugging Face "
                f"tokenizer (transformers.PreTrainedTokenizerBase), got {type(tokenizer).__name__}"
            )
        self.tokenizer = tokenizer

    # -- ids ------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of token ids (V): the model's output layer must have at least this many rows."""
        return self._vocab_size

    @property
    def eos_token_id(self) -> int:
        return int(self._eos)

    @property
    def pad_token_id(self) -> int:
        return int(self._pad)

    @property
    def bos_token_id(self):
        return None if self._bos is None else int(self._bos)

    @property
    def special_token_ids(self) -> frozenset:
        """Ids that :meth:`decode` drops."""
        return self._specials

    def __len__(self) -> int:
        return self._vocab_size

    def __repr__(self) -> str:
        return f"TokenizerAdapter({type(self.tokenizer).__name__}, vocab_size={self.vocab_size})"

    # -- text <-> ids ---------------------------------------------------------------------------
    def encode(self, text: str, *, add_bos: bool = False) -> list:
        """Token ids of ``text`` without special tokens (``add_bos`` prepends ``<bos>`` when the
        tokenizer has one)."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.kind == "fastlmrl":
            ids = self.tokenizer.encode(text).tolist()
        else:
            ids = [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False)]
        if add_bos and self._bos is not None:
            ids.insert(0, int(self._bos))
        return ids

    def decode(self, ids, *, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a sequence of ints, 1-D array or tensor); special tokens dropped."""
        if hasattr(ids, "tolist"):
            ids = ids.tolist()
        ids = list(ids)
        for i, t in enumerate(ids):
            if isinstance(t, (bool, np.bool_)) or not isinstance(t, numbers.Integral):
                raise TypeError(f"ids[{i}] must be an int, got {type(t).__name__}")
            if not 0 <= int(t) < self._vocab_size:
                raise ValueError(f"ids[{i}] = {t} is out of range [0, {self._vocab_size})")
        if skip_special_tokens:
            ids = [int(t) for t in ids if int(t) not in self._specials]
        if self.kind == "fastlmrl":
            return self.tokenizer.decode(np.asarray(ids, dtype=np.int64), skip_special=False)
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences, *, skip_special_tokens: bool = True) -> list:
        """:meth:`decode` of each row (a list of id lists, a 2-D array or tensor)."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        return [self.decode(s, skip_special_tokens=skip_special_tokens) for s in sequences]

    def encode_prompts(self, texts, *, add_bos: bool = True, return_tensors: str = "pt"):
        """Left-padded batch of prompts: ``(input_ids, attention_mask)``, both ``(B, T)`` int64.

        Each row is ``[pad] * k + [<bos>] + encode(text)`` (no ``<bos>`` when ``add_bos`` is False
        or the tokenizer has none); ``attention_mask`` is 1 on the prompt tokens, 0 on padding;
        ``T`` is the longest prompt.  ``return_tensors``: ``"pt"`` (torch tensors) or ``"np"``.
        An empty prompt without ``<bos>`` is an error (nothing for the model to condition on).
        """
        texts = _check_texts(texts, "texts")
        if return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {return_tensors!r}")
        if not texts:
            raise ValueError("texts is empty: give at least one prompt")
        rows = [self.encode(t, add_bos=add_bos) for t in texts]
        for i, r in enumerate(rows):
            if not r:
                raise ValueError(
                    f"texts[{i}] encodes to no token (an empty prompt needs a "
                    f"tokenizer with a <bos> token and add_bos=True)"
                )
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad_token_id, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, width - len(r) :] = r
            attention_mask[i, width - len(r) :] = 1
        if return_tensors == "pt":
            import torch

            return torch.from_numpy(input_ids), torch.from_numpy(attention_mask)
        return input_ids, attention_mask

    # -- persistence ----------------------------------------------------------------------------
    def save(self, folder) -> None:
        """Write the tokenizer into ``folder`` (which must exist): ``fastlmrl_tokenizer.json`` for a
        fastlmrl tokenizer, the Hugging Face files (``save_pretrained``) otherwise."""
        if self.kind == "fastlmrl":
            self.tokenizer.save(os.path.join(os.fspath(folder), FASTLMRL_TOKENIZER_FILE))
        else:
            self.tokenizer.save_pretrained(os.fspath(folder))


#: File name of a fastlmrl tokenizer inside a saved model folder.
FASTLMRL_TOKENIZER_FILE = "fastlmrl_tokenizer.json"


def as_tokenizer(tokenizer) -> TokenizerAdapter:
    """``tokenizer`` as a :class:`TokenizerAdapter` (returned unchanged when it already is one)."""
    if isinstance(tokenizer, TokenizerAdapter):
        return tokenizer
    return TokenizerAdapter(tokenizer)
