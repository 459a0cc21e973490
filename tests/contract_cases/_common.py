"""Helpers shared by the contract case files (imported as ``from ._common import ...``;
tests/test_contract.py loads the case files as the package ``contract_cases``)."""

#: Valid scalar arguments of the loss kernels (policy_losses, tabular_losses)
LOSS_SCALARS = {
    "clip_low": 0.2,
    "clip_high": 0.3,
    "dual_clip": 3.0,
    "kl_coef": 0.1,
    "kl_estimator": 3,
    "sequence_level": 1,
    "value_clip": 0.2,
    "value_coef": 0.5,
    "entropy_coef": 0.01,
    "num_threads": 1,
}
#: The loss kernels' float64 (N,) outputs
LOSS_OUTPUTS = ("token_loss", "log_probs", "ratios", "entropies", "value_grad")


def in_order(kernel, values):
    """``{argument name: value}`` of ``kernel``'s arguments, in its order (``values`` may hold
    more)."""
    return {name: values[name] for name in kernel.arg_names}


def changed(args, **changes):
    """A copy of the argument dict ``args`` with ``changes`` applied (the arrays are shared)."""
    broken = dict(args)
    broken.update(changes)
    return broken


def with_entry(args, name, index, value):
    """``args`` with a copy of array ``name`` whose entry ``index`` is ``value``."""
    array = args[name].copy()
    array[index] = value
    return changed(args, **{name: array})


def shortened(args, name):
    """``args`` with a copy of array ``name`` one item short (its first axis)."""
    return changed(args, **{name: args[name][:-1].copy()})


def sharing(args, name, other):
    """``args`` whose ``name`` is the array passed as ``other`` (the same memory)."""
    return changed(args, **{name: args[other]})


def bad_token_inputs(args, name, status):
    """The loss topics' breakages of a per-token real input ``name``: NaN and +inf at entry 1,
    and -1.0 too for ``weights`` (negative)."""
    for bad in (float("nan"), float("inf")) + ((-1.0,) if name == "weights" else ()):
        yield f"{name}[1] = {bad}", with_entry(args, name, 1, bad), status
