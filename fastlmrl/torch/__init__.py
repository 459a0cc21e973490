"""fastlmrl inside PyTorch: differentiable custom ops over fastlmrl's fused CPU kernels.

Install with ``pip install 'fastlmrl[torch]'``.  The ops are registered under the ``fastlmrl``
namespace (``torch.ops.fastlmrl.*``) with fake (meta) implementations and autograd formulas, so
they run in eager mode, under ``torch.compile(fullgraph=True)`` and pass
``torch.library.opcheck``.  CPU tensors only (a tensor on another device raises ValueError naming
it); logits of dtype float32, float64 or bfloat16 (computed in float32).

* :func:`token_log_probs`, :func:`entropy`, :func:`logsumexp` -- (..., V) logits to (...,);
* :func:`ppo_loss`, :func:`reinforce_loss`, :func:`a2c_loss`, :func:`kl_penalty_loss` -- fused
  loss + gradient in one kernel pass; :func:`loss_weights` for GRPO / BNPO / Dr. GRPO / DAPO;
* :func:`linear_token_log_probs`, :func:`linear_ppo_loss`, :func:`linear_reinforce_loss` (with
  returns 1: the cross-entropy) -- fused LM head: ``hidden @ weight.T`` in chunks of rows, never
  the (N, V) logits;
* :func:`sample_tokens` -- one token per row (temperature, top-k, top-p, min-p) from the
  counter-based RNG, with its log-probabilities (not differentiable).

Large gradient buffers are allocated by NumPy (transparent huge pages) and kept for reuse once
their tensors are gone, up to 4 GiB (``set_buffer_cache``, ``empty_cache``; environment variable
``FASTLMRL_TORCH_CACHE_BYTES``).  ``import fastlmrl`` does not import torch; this module does.
"""

try:
    import torch as _torch
except ImportError as _exc:  # pragma: no cover - exercised by a subprocess test
    raise ImportError(
        "fastlmrl.torch needs PyTorch: pip install 'fastlmrl[torch]' (for the CPU-only build: "
        "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
    ) from _exc

if tuple(int(p) for p in _torch.__version__.split("+")[0].split(".")[:2]) < (2, 4):
    raise ImportError(
        f"fastlmrl.torch needs torch >= 2.4 (torch.library.custom_op), found "
        f"{_torch.__version__}: pip install 'fastlmrl[torch]' --upgrade"
    )

from ._tensors import empty_cache, set_buffer_cache  # noqa: E402
from .group_advantages import loss_weights  # noqa: E402
from .lm_head import linear_ppo_loss, linear_reinforce_loss, linear_token_log_probs  # noqa: E402
from .log_probs import entropy, logsumexp, token_log_probs  # noqa: E402
from .policy_losses import (  # noqa: E402
    A2CLossResult,
    KLPenaltyResult,
    PPOLossResult,
    ReinforceLossResult,
    a2c_loss,
    kl_penalty_loss,
    ppo_loss,
    reinforce_loss,
)
from .sampling import SampledTokens, sample_tokens  # noqa: E402

__all__ = [
    "A2CLossResult",
    "KLPenaltyResult",
    "PPOLossResult",
    "ReinforceLossResult",
    "SampledTokens",
    "a2c_loss",
    "empty_cache",
    "entropy",
    "kl_penalty_loss",
    "linear_ppo_loss",
    "linear_reinforce_loss",
    "linear_token_log_probs",
    "logsumexp",
    "loss_weights",
    "ppo_loss",
    "reinforce_loss",
    "sample_tokens",
    "set_buffer_cache",
    "token_log_probs",
]
