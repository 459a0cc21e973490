r"""A PyTorch causal language model as an RL policy: :class:`NeuralPolicy`.

Any ``torch.nn.Module`` that maps ``input_ids`` (B, T) -- and, when its ``forward`` takes them,
``attention_mask`` (B, T), ``position_ids`` (B, T), a key/value cache (``cache`` in recent
``transformers``, ``past_key_values`` before) with ``use_cache``, and
``output_hidden_states`` -- to logits (B, T, V), either as a tensor or as an object with a
``.logits`` attribute (the ``transformers`` convention), together with its tokenizer (a fastlmrl
tokenizer or a Hugging Face one, wrapped in :class:`~fastlmrl.neural.TokenizerAdapter`).

Time indices: the logits at position ``t`` of a sequence are the model's distribution of the token
at ``t + 1``.  The policy of the RL trainers is :math:`\pi_\theta(\cdot \mid x_{\le t}) =
\mathrm{softmax}(\text{logits}_t / \tau)` with the sampling temperature :math:`\tau` (as TRL).

**Fused LM head.**  When the model exposes its output layer (``get_output_embeddings()`` returns an
``nn.Linear``) and ``output_hidden_states=True`` yields the last hidden states that the layer
multiplies (``logits = hidden[-1] @ weight.T + bias``; true for ``transformers``' GPT-2, Llama and
most causal LMs, whose last hidden state is taken after the final norm), the trainers compute the
loss with :func:`fastlmrl.torch.linear_ppo_loss` / :func:`~fastlmrl.torch.linear_token_log_probs`
from ``(hidden, weight)`` without forming the (N, V) logits.  :meth:`NeuralPolicy.fused_head`
checks that identity once on a small input (it does not trust the names); when it does not hold,
the trainers use the logits path (:func:`fastlmrl.torch.ppo_loss`).

**Value head.**  ``value_head=True`` adds ``nn.Linear(H, 1)`` on the last hidden states (PPO's
critic sharing the trunk, as TRL's ``AutoModelForCausalLMWithValueHead``): :math:`V(x_{\le t})` at
position ``t``.

**Reference.**  :meth:`NeuralPolicy.frozen_copy` returns a deep copy of the model with
``requires_grad=False`` in eval mode: :math:`\pi_{\mathrm{ref}}` of the KL term.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .tokenizer import as_tokenizer

__all__ = ["ModelOutput", "NeuralPolicy", "position_ids_from_mask"]


class ModelOutput(NamedTuple):
    """What :meth:`NeuralPolicy.forward` returns."""

    logits: Tensor | None  #: (B, T, V), None when only hidden states were asked for
    hidden: Tensor | None  #: (B, T, H) last hidden states (None unless requested)
    past_key_values: object  #: the model's key/value cache (None unless ``use_cache``)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """Positions of left-padded rows: ``cumsum(mask) - 1``, 0 on the padding (as ``transformers``'
    ``generate``), so a row's first real token has position 0 however much padding precedes it."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)


def _parameters(forward) -> dict:
    try:
        return dict(inspect.signature(forward).parameters)
    except (TypeError, ValueError):  # pragma: no cover - builtins
        return {}


def _accepts(params: dict, name: str) -> bool:
    return name in params or any(p.kind == p.VAR_KEYWORD for p in params.values())


class NeuralPolicy(nn.Module):
    """A causal LM and its tokenizer as a policy (see the module docstring).

    Parameters
    ----------
    model : ``nn.Module``; ``input_ids`` (B, T) -> logits (B, T, V) or an object with ``.logits``
    tokenizer : fastlmrl ``CharTokenizer`` / ``WordTokenizer``, Hugging Face tokenizer or
        :class:`~fastlmrl.neural.TokenizerAdapter`; its ``vocab_size`` must not exceed V
    value_head : add a scalar value head on the last hidden states (PPO's critic)
    """

    def __init__(self, model: nn.Module, tokenizer, *, value_head: bool = False):
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(value_head, bool):
            raise TypeError(f"value_head must be a bool, got {type(value_head).__name__}")
        self.model = model
        self.tokenizer = as_tokenizer(tokenizer)
        params = _parameters(model.forward)
        self._takes = {
            name: _accepts(params, name)
            for name in ("attention_mask", "position_ids", "use_cache", "output_hidden_states")
        }
        # the cache argument must be named explicitly (``cache`` in transformers >= 5.2x,
        # ``past_key_values`` before); a bare **kwargs may ignore it
        self._cache_arg = next((n for n in ("cache", "past_key_values") if n in params), None)
        self._fused: bool | None = None
        self._trunk_ok = False  # base_model's last_hidden_state == hidden_states[-1]
        self._takes_keep = "logits_to_keep" in params
        self.value_head = None
        if value_head:
            size = self.hidden_size()
            self.value_head = nn.Linear(size, 1)
            with torch.no_grad():  # a zero critic at the start: no random value noise
                self.value_head.weight.zero_()
                self.value_head.bias.zero_()

    # -- what the model offers ----------------------------------------------------------------
    @property
    def supports_cache(self) -> bool:
        """Whether the model's ``forward`` takes ``past_key_values`` and ``use_cache``."""
        return self._cache_arg is not None and self._takes["use_cache"]

    @property
    def supports_hidden_states(self) -> bool:
        return self._takes["output_hidden_states"]

    def output_layer(self) -> nn.Linear | None:
        """The model's output layer when it is an ``nn.Linear`` (``get_output_embeddings()``)."""
        get = getattr(self.model, "get_output_embeddings", None)
        layer = get() if callable(get) else None
        return layer if isinstance(layer, nn.Linear) else None

    def hidden_size(self) -> int:
        layer = self.output_layer()
        if layer is not None:
            return int(layer.in_features)
        config = getattr(self.model, "config", None)
        for name in ("hidden_size", "n_embd", "d_model"):
            if config is not None and isinstance(getattr(config, name, None), int):
                return int(getattr(config, name))
        raise ValueError(
            "value_head=True needs the model's hidden size: give a model with an "
            "nn.Linear output layer (get_output_embeddings()) or a config with "
            "hidden_size"
        )

    def fused_head(self) -> bool:
        """Whether ``logits == hidden[-1] @ W.T (+ b)`` for this model (checked once, on a
        two-token input, to float32 tolerance): the trainers' fused LM-head path."""
        if self._fused is None:
            layer = self.output_layer()
            self._fused = False
            if layer is not None and self.supports_hidden_states:
                ids = torch.tensor([[self.tokenizer.eos_token_id, self.tokenizer.pad_token_id]])
                with torch.no_grad():
                    out = self.forward(ids, torch.ones_like(ids), hidden=True)
                    if (
                        out.hidden is not None
                        and out.logits is not None  # always: the forward asked for logits
                        and out.hidden.shape[-1] == layer.in_features
                    ):
                        direct = nn.functional.linear(out.hidden, layer.weight, layer.bias)
                        scale = float(out.logits.abs().max()) + 1.0
                        self._fused = bool((direct - out.logits).abs().max() <= 1e-4 * scale)
                        trunk = self._trunk()
                        if self._fused and trunk is not None:
                            try:
                                last = trunk(
                                    ids,
                                    attention_mask=torch.ones_like(ids),
                                    position_ids=position_ids_from_mask(torch.ones_like(ids)),
                                ).last_hidden_state
                                self._trunk_ok = bool(torch.equal(last, out.hidden))
                            except (TypeError, ValueError, AttributeError, RuntimeError):
                                self._trunk_ok = False
        return self._fused

    def _trunk(self):
        """``model.base_model`` (the transformer without its LM head) when there is one."""
        trunk = getattr(self.model, "base_model", None)
        return trunk if isinstance(trunk, nn.Module) and trunk is not self.model else None

    # -- forward --------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        *,
        position_ids: Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        hidden: bool = False,
        logits: bool = True,
        last_only: bool = False,
    ) -> ModelOutput:
        """Run the model.  ``position_ids`` default to :func:`position_ids_from_mask`;
        ``hidden=True`` also returns the last hidden states (``output_hidden_states``);
        ``logits=False`` with ``hidden=True`` runs only the trunk (``model.base_model``) when
        :meth:`fused_head` found its ``last_hidden_state`` equal to the full model's last hidden
        state: no (B, T, V) logits are formed.  ``last_only``: logits of the last position only
        (``logits_to_keep=1`` where the model takes it; the returned logits are (B, 1, V))."""
        if hidden and not logits and self.fused_head() and self._trunk_ok:
            kwargs: dict[str, Any] = {"attention_mask": attention_mask}
            if position_ids is None and attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)
            kwargs["position_ids"] = position_ids
            if self._takes["use_cache"]:
                kwargs["use_cache"] = False
            last = self._trunk()(input_ids, **kwargs).last_hidden_state
            return ModelOutput(None, last, None)
        kwargs = {}
        if attention_mask is not None and self._takes["attention_mask"]:
            kwargs["attention_mask"] = attention_mask
        if self._takes["position_ids"]:
            if position_ids is None and attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)[:, -input_ids.shape[1] :]
            if position_ids is not None:
                kwargs["position_ids"] = position_ids
        if use_cache:
            if not self.supports_cache:
                raise ValueError(
                    "this model's forward takes no past_key_values / use_cache: "
                    "generate with use_cache=False"
                )
            kwargs["use_cache"] = True
            if past_key_values is not None and self._cache_arg is not None:  # supports_cache
                kwargs[self._cache_arg] = past_key_values
        elif self._takes["use_cache"]:
            kwargs["use_cache"] = False
        if hidden:
            if not self.supports_hidden_states:
                raise ValueError("this model's forward takes no output_hidden_states")
            kwargs["output_hidden_states"] = True
        if last_only and self._takes_keep:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids, **kwargs)
        out_logits: Any
        if isinstance(out, Tensor):
            out_logits, states, cache = out, None, None
        else:
            out_logits = getattr(out, "logits", None)
            if out_logits is None and isinstance(out, (tuple, list)) and out:
                out_logits = out[0]
            states = getattr(out, "hidden_states", None)
            cache = getattr(out, "cache", None)
            if cache is None:
                cache = getattr(out, "past_key_values", None)
        width = 1 if last_only and self._takes_keep else input_ids.shape[1]
        if (
            not isinstance(out_logits, Tensor)
            or out_logits.ndim != 3
            or tuple(out_logits.shape[:2]) != (input_ids.shape[0], width)
        ):
            raise ValueError(
                f"the model must return logits of shape (B, T, V) = "
                f"{(input_ids.shape[0], width)} + (V,), got "
                f"{getattr(out_logits, 'shape', type(out_logits).__name__)}"
            )
        if out_logits.shape[-1] < self.tokenizer.vocab_size:
            raise ValueError(
                f"the model has V = {out_logits.shape[-1]} logits, fewer than the "
                f"tokenizer's vocab_size = {self.tokenizer.vocab_size}"
            )
        last = None
        if hidden:
            if states is None:
                raise ValueError(
                    "the model returned no hidden_states for output_hidden_states=True"
                )
            last = states[-1]
        return ModelOutput(out_logits if logits else None, last, cache if use_cache else None)

    def values(self, hidden: Tensor) -> Tensor:
        """:math:`V` per position (B, T) from the last hidden states (needs ``value_head``)."""
        if self.value_head is None:
            raise ValueError("this policy has no value head (NeuralPolicy(..., value_head=True))")
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)

    def frozen_copy(self) -> nn.Module:
        """A deep copy of the model, eval mode, ``requires_grad=False``: :math:`\\pi_{ref}`."""
        ref = copy.deepcopy(self.model)
        ref.eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        return ref

    def with_model(self, model: nn.Module) -> NeuralPolicy:
        """A policy over another model with the same tokenizer (no value head): e.g. the frozen
        reference, to reuse :meth:`forward`."""
        return NeuralPolicy(model, self.tokenizer)
