"""Causal language models for the neural side: built from ``transformers`` configs, saved, loaded.

The models are ``transformers``' own architectures (``GPT2LMHeadModel``, ``LlamaForCausalLM``)
built from a config with random weights -- fastlmrl writes no transformer of its own.

* :func:`default_model_config` / :func:`build_model`: a small model from a config, initialised by
  ``torch.manual_seed(seed)`` (same weights for the same seed, torch version and config).  Dropout
  is 0: a policy's forward pass must be deterministic so that the log-probabilities the sampler
  recorded equal the trainer's.
* :func:`save_model`: the model's ``save_pretrained`` files (``config.json``,
  ``model.safetensors``) plus the tokenizer (``fastlmrl_tokenizer.json`` for a fastlmrl tokenizer,
  the Hugging Face tokenizer files otherwise) and any extra JSON metadata, written into a
  temporary sibling folder and renamed into place: a reader never sees a half-written folder.
* :func:`load_model`: a folder written by :func:`save_model` *or any local Hugging Face model
  folder* (``AutoModelForCausalLM.from_pretrained(folder, local_files_only=True)``); nothing is
  downloaded.

Install with ``pip install 'fastlmrl[neural]'`` (torch and transformers).
"""

from __future__ import annotations

import json
import os
import shutil
from types import ModuleType
from typing import TYPE_CHECKING

from .._atomic import as_path, temp_name
from .tokenizer import FASTLMRL_TOKENIZER_FILE, TokenizerAdapter, as_tokenizer

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel

__all__ = [
    "ARCHITECTURES",
    "METADATA_FILE",
    "build_model",
    "default_model_config",
    "load_model",
    "read_metadata",
    "require_transformers",
    "save_model",
]

#: Architectures :func:`build_model` knows.
ARCHITECTURES = ("gpt2", "llama")
#: JSON file of fastlmrl's own metadata in a saved model folder.
METADATA_FILE = "fastlmrl_model.json"
_INSTALL = "pip install 'fastlmrl[neural]'"
# files one of which a Hugging Face tokenizer folder holds
_HF_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "vocab.txt",
    "tokenizer.model",
    "spiece.model",
)


def require_transformers() -> ModuleType:
    """Import and return ``transformers``; ImportError naming the install command otherwise."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            f"fastlmrl.neural needs PyTorch and transformers: {_INSTALL} (CPU-only "
            f"torch: pip install torch --index-url "
            f"https://download.pytorch.org/whl/cpu)"
        ) from exc
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(f"fastlmrl.neural needs the transformers package: {_INSTALL}") from exc
    return transformers


def _positive(x, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int, got {type(x).__name__}")
    if x < 1:
        raise ValueError(f"{name} must be >= 1, got {x}")
    return int(x)


def _optional_id(x, name: str, vocab_size: int):
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"{name} must be an int or None, got {type(x).__name__}")
    if not 0 <= x < vocab_size:
        raise ValueError(f"{name} = {x} is out of range [0, {vocab_size})")
    return int(x)


def default_model_config(
    vocab_size: int,
    *,
    architecture: str = "gpt2",
    n_layer: int = 2,
    n_embd: int = 128,
    n_head: int = 4,
    n_positions: int = 256,
    bos_token_id: int | None = 0,
    eos_token_id: int | None = 1,
    pad_token_id: int | None = None,
) -> PretrainedConfig:
    """A ``transformers`` config of a small causal LM (``GPT2Config`` or ``LlamaConfig``).

    ``n_embd`` must be a multiple of ``n_head``.  GPT-2: ``n_inner = 4 * n_embd``, GELU, learned
    positions, tied input/output embeddings.  Llama: ``intermediate_size = 4 * n_embd`` (SwiGLU),
    rotary positions, RMSNorm, tied embeddings, ``num_key_value_heads = n_head``.  No dropout.
    The default special ids are fastlmrl's tokenizers' (``<bos>`` = 0, ``<eos>`` = 1).
    """
    transformers = require_transformers()
    vocab_size = _positive(vocab_size, "vocab_size")
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
    n_layer = _positive(n_layer, "n_layer")
    n_embd = _positive(n_embd, "n_embd")
    n_head = _positive(n_head, "n_head")
    n_positions = _positive(n_positions, "n_positions")
    if n_embd % n_head:
        raise ValueError(f"n_embd = {n_embd} must be a multiple of n_head = {n_head}")
    ids = dict(
        bos_token_id=_optional_id(bos_token_id, "bos_token_id", vocab_size),
        eos_token_id=_optional_id(eos_token_id, "eos_token_id", vocab_size),
        pad_token_id=_optional_id(pad_token_id, "pad_token_id", vocab_size),
    )
    if architecture == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size,
            n_positions=n_positions,
            n_embd=n_embd,
            n_layer=n_layer,
            n_head=n_head,
            n_inner=4 * n_embd,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **ids,
        )
    return transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=n_embd,
        intermediate_size=4 * n_embd,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=n_positions,
        attention_dropout=0.0,
        tie_word_embeddings=True,
        **ids,
    )


def build_model(
    vocab_size: int,
    *,
    architecture: str = "gpt2",
    n_layer: int = 2,
    n_embd: int = 128,
    n_head: int = 4,
    n_positions: int = 256,
    seed: int = 0,
    bos_token_id: int | None = 0,
    eos_token_id: int | None = 1,
    pad_token_id: int | None = None,
) -> PreTrainedModel:
    """A randomly initialised ``transformers`` causal LM (``GPT2LMHeadModel`` /
    ``LlamaForCausalLM``) of :func:`default_model_config`, in eval mode (no dropout anyway).

    The weights are drawn after ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng``
    (the caller's global torch RNG state is left as it was).
    """
    transformers = require_transformers()
    import torch

    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if not 0 <= seed < 2**63:
        raise ValueError(f"seed must be in [0, 2**63), got {seed}")
    config = default_model_config(
        vocab_size,
        architecture=architecture,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_positions=n_positions,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )
    cls = transformers.GPT2LMHeadModel if architecture == "gpt2" else transformers.LlamaForCausalLM
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config)
    model.eval()
    return model


class _quiet_progress:
    """Turn off transformers' / huggingface_hub's progress bars inside a ``with`` block."""

    def __enter__(self):
        from transformers.utils import logging

        self._was = logging.is_progress_bar_enabled()
        logging.disable_progress_bar()

    def __exit__(self, *exc):
        from transformers.utils import logging

        if self._was:
            logging.enable_progress_bar()
        return False


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def save_model(
    model: PreTrainedModel,
    tokenizer: object,
    folder: str | os.PathLike[str],
    *,
    metadata: dict | None = None,
) -> None:
    """Save ``model`` (a ``transformers`` ``PreTrainedModel``) and ``tokenizer`` (fastlmrl,
    Hugging Face or :class:`TokenizerAdapter`) into ``folder``, atomically.

    Everything is written into a temporary folder next to ``folder``, which is then renamed to
    ``folder``; an existing ``folder`` is first renamed aside and deleted after the swap (a reader
    sees the old folder or the new one, never a mixture; a crash between the two renames leaves
    the old folder under a ``.tmp-fastlmrl-...`` name and no ``folder``).  ``metadata`` (JSON
    values) goes to ``fastlmrl_model.json`` (:func:`read_metadata`).
    """
    require_transformers()
    path = as_path(folder, "folder")
    if not hasattr(model, "save_pretrained"):
        raise TypeError(
            f"model must be a transformers PreTrainedModel (with save_pretrained), "
            f"got {type(model).__name__}"
        )
    adapter = as_tokenizer(tokenizer)
    meta = {"format": "fastlmrl.model", "version": 1, "tokenizer": adapter.kind}
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
        meta["metadata"] = metadata
    text = json.dumps(meta, indent=1, sort_keys=True)  # fails before anything is written
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"folder {folder!r} exists and is not a folder")
    os.makedirs(parent, exist_ok=True)
    tmp = temp_name(path)
    try:
        os.mkdir(tmp)
        with _quiet_progress():
            model.save_pretrained(tmp, safe_serialization=True)
        adapter.save(tmp)
        with open(os.path.join(tmp, METADATA_FILE), "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        for name in os.listdir(tmp):  # make the file contents durable before the rename
            full = os.path.join(tmp, name)
            if os.path.isfile(full):
                fd = os.open(full, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        old = None
        if os.path.isdir(path):
            old = temp_name(path)
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        _remove_tree(tmp)
        raise
    if old is not None:
        _remove_tree(old)


def read_metadata(folder: str | os.PathLike[str]) -> dict:
    """The ``metadata`` dict that :func:`save_model` stored in ``folder`` ({} when there is none,
    e.g. a plain Hugging Face folder)."""
    path = os.path.join(as_path(folder, "folder"), METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path!r} is not a valid fastlmrl model metadata file: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != "fastlmrl.model":
        raise ValueError(f"{path!r} is not a fastlmrl model metadata file")
    return dict(data.get("metadata", {}))


def load_model(folder: str | os.PathLike[str]) -> tuple[PreTrainedModel, TokenizerAdapter]:
    """``(model, tokenizer)`` from a local folder; ``tokenizer`` is a :class:`TokenizerAdapter`.

    ``folder``: written by :func:`save_model`, or any local Hugging Face causal-LM folder
    (``config.json`` + weights, tokenizer files).  Loaded with ``local_files_only=True``: never
    a download.  The model is returned in eval mode.  Raises ValueError naming the folder when
    it does not exist or holds no model (``config.json``) or no tokenizer.
    """
    transformers = require_transformers()
    path = as_path(folder, "folder")
    if not os.path.exists(path):
        raise ValueError(f"model folder {path!r} does not exist")
    if not os.path.isdir(path):
        raise ValueError(f"model folder {path!r} is not a folder")
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ValueError(
            f"model folder {path!r} holds no config.json: not a saved model "
            f"(fastlmrl.neural.save_model or save_pretrained)"
        )
    try:
        with _quiet_progress():
            model = transformers.AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"model folder {path!r}: cannot load the model: {exc}") from None
    model.eval()
    ours = os.path.join(path, FASTLMRL_TOKENIZER_FILE)
    if os.path.isfile(ours):
        from ..tokenizers import load_tokenizer

        tokenizer = load_tokenizer(ours)
    else:
        present = [f for f in _HF_TOKENIZER_FILES if os.path.isfile(os.path.join(path, f))]
        if not present:
            raise ValueError(
                f"model folder {path!r}: no tokenizer found ({FASTLMRL_TOKENIZER_FILE}"
                f" or Hugging Face tokenizer files: {', '.join(_HF_TOKENIZER_FILES)})"
            )
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(
                f"model folder {path!r}: no tokenizer found ({FASTLMRL_TOKENIZER_FILE}"
                f" or Hugging Face tokenizer files): {exc}"
            ) from None
    adapter = TokenizerAdapter(tokenizer)
    if adapter.vocab_size > model.get_input_embeddings().weight.shape[0]:
        raise ValueError(
            f"model folder {path!r}: the tokenizer has {adapter.vocab_size} ids but "
            f"the model only {model.get_input_embeddings().weight.shape[0]}"
        )
    return model, adapter
