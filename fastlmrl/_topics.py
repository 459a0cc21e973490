"""The kernel topics: one module per topic in every backend (``_python``, ``_numba``, ``_cython``)
and one public dispatcher module of the same name in :mod:`fastlmrl`.  Each backend module lists its
kernels in ``__all__``; every backend must export the same names (a test checks it)."""

TOPICS = (
    # tabular value methods
    "selection",
    "td_learning",
    "monte_carlo",
    "dynamic_programming",
    "argmax_tree",
    # policy gradients on logits
    "log_probs",
    "policy_losses",
    "tabular_losses",
    "advantages",
    "group_advantages",
    "kl_divergence",
    "optimizers",
    # token environments
    "environments",
    # random permutations (minibatch shuffles)
    "permutations",
    # rewards
    "keyword_scores",
    # next-token sampling (temperature, top-k, top-p, min-p)
    "sampling",
)


def gather(package: str, namespace: dict) -> list:
    """Import every topic module of ``package`` and copy its ``__all__`` names into
    ``namespace``."""
    import importlib

    names = []
    for topic in TOPICS:
        module = importlib.import_module(f"{package}.{topic}")
        for name in getattr(module, "__all__", ()):
            namespace[name] = getattr(module, name)
            names.append(name)
    return names
