"""fastlmrl's neural side: PyTorch causal language models as RL policies.

Install with ``pip install 'fastlmrl[neural]'`` (torch and transformers).  ``import fastlmrl`` does
not import this package (nor torch); importing it does.

* :mod:`fastlmrl.neural.tokenizer`: :class:`TokenizerAdapter`, one interface over fastlmrl's and
  Hugging Face tokenizers;
* :mod:`fastlmrl.neural.model`: :func:`build_model` (``transformers`` GPT-2 / Llama from a config),
  :func:`save_model` (atomic), :func:`load_model` (our folders and any local Hugging Face folder);
* :mod:`fastlmrl.neural.pretraining`: :func:`pretrain` a small model from scratch on the built-in
  corpus (plus examples of the verifiable tasks), :func:`pretrained_model` (cached on disk).
"""

from .model import (  # noqa: F401
    ARCHITECTURES,
    build_model,
    default_model_config,
    load_model,
    read_metadata,
    require_transformers,
    save_model,
)

require_transformers()

from .pretraining import (  # noqa: E402
    PretrainResult,
    generate_completions,
    held_out_perplexity,
    model_cache_dir,
    pretrain,
    pretrained_model,
    task_success_rate,
)
from .tokenizer import TokenizerAdapter, as_tokenizer  # noqa: E402

__all__ = [
    "ARCHITECTURES",
    "PretrainResult",
    "TokenizerAdapter",
    "as_tokenizer",
    "build_model",
    "default_model_config",
    "generate_completions",
    "held_out_perplexity",
    "load_model",
    "model_cache_dir",
    "pretrain",
    "pretrained_model",
    "read_metadata",
    "require_transformers",
    "save_model",
    "task_success_rate",
]

# RL policies and rollouts (the trainers are fastlmrl.trainers.Neural*Trainer)
from .policy import ModelOutput, NeuralPolicy, position_ids_from_mask  # noqa: E402
from .rollout import Rollout, generate  # noqa: E402

__all__ += ["ModelOutput", "NeuralPolicy", "Rollout", "generate", "position_ids_from_mask"]
