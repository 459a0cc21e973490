r"""Loss normalisations of GRPO and its variants as per-token weight tensors (the torch face of
:func:`fastlmrl.group_advantages.loss_weights`; modes ``"grpo"``, ``"bnpo"``, ``"dr_grpo"``,
``"dapo"`` -- TRL's ``loss_type`` -- documented there with their papers).

Pass the result as ``weights`` to :func:`fastlmrl.torch.ppo_loss` (or any loss here):
``loss = sum(w * per_token_loss)`` is then the method's aggregation.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _validation as check
from .. import group_advantages as _np
from . import _tensors as tt

__all__ = ["loss_weights"]


@torch.library.custom_op("fastlmrl::loss_weights", mutates_args=(), device_types="cpu")
def _loss_weights(
    mask: Tensor,
    mode: str,
    num_sequences: int | None,
    num_tokens: int | None,
    max_length: int | None,
) -> Tensor:
    m = mask.detach().contiguous().numpy()
    return torch.from_numpy(
        _np.loss_weights(
            m, mode, num_sequences=num_sequences, num_tokens=num_tokens, max_length=max_length
        )
    )


@_loss_weights.register_fake
def _(mask, mode, num_sequences, num_tokens, max_length):
    return mask.new_empty(mask.shape, dtype=torch.float64)


@check.renamed(ecosystem={"loss_type": "mode"})
def loss_weights(
    mask: Tensor,
    mode: str,
    *,
    num_sequences=None,
    num_tokens=None,
    max_length=None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    r"""(B, T) weights ``w`` with ``loss = sum(w * per_token_loss)`` aggregating as GRPO
    (:math:`1/(N_{seq}|o_b|)`), BNPO (:math:`1/\sum_b|o_b|`), Dr. GRPO (:math:`1/(N_{seq}T_{max})`)
    or DAPO (:math:`1/N_{tok}` over the global batch).  ``mask``: (B, T) bool (or 0/1 integer)
    tensor of active completion tokens; ``loss_type`` (TRL's name for ``mode``) is accepted too.
    Each weight is computed in float64 and rounded once to ``dtype``.
    """
    m = tt.tensor(mask, "mask")
    if m.dtype != torch.bool and m.dtype not in tt.INT_DTYPES:
        raise TypeError(f"mask must be a bool (or 0/1 integer) tensor, got {m.dtype}")
    if dtype not in tt.REAL_DTYPES:
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype}")
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-dimensional (B, T), got shape {tuple(m.shape)}")
    return tt.as_dtype(_loss_weights(m, mode, num_sequences, num_tokens, max_length), dtype)
