"""fastlmrl: fast reinforcement learning on language-model token decisions.

Kernels run on one of three backends with identical semantics (see :func:`show_config`): the
pure-Python reference, Numba and Cython.  Public functions validate their arguments, allocate
outputs and dispatch to the active backend; the raw Numba kernels are in
:mod:`fastlmrl.numba_kernels` and the Cython ones can be ``cimport``-ed from ``fastlmrl._cython``.
"""

__version__ = "0.1.0"

from . import (
    advantages,
    argmax_tree,
    corpus,
    dynamic_programming,
    environments,
    group_advantages,
    kl_divergence,
    log_probs,
    monte_carlo,
    ngram,
    optimizers,
    permutations,
    policy_losses,
    rewards,
    sampling,
    schedules,
    selection,
    tabular_losses,
    td_learning,
    tokenizers,
)
from ._backend import (
    BACKENDS,
    BackendUnavailableWarning,
    available_backends,
    get_backend,
    get_num_threads,
    set_backend,
    set_num_threads,
    show_config,
    use_backend,
)
from ._status import Status
from .advantages import *  # noqa: F401,F403
from .argmax_tree import *  # noqa: F401,F403
from .corpus import *  # noqa: F401,F403
from .dynamic_programming import *  # noqa: F401,F403
from .environments import *  # noqa: F401,F403
from .group_advantages import *  # noqa: F401,F403
from .keyword_scores import keyword_scores  # noqa: E402  (the name is the function)
from .kl_divergence import *  # noqa: F401,F403
from .log_probs import *  # noqa: F401,F403
from .monte_carlo import *  # noqa: F401,F403
from .ngram import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403
from .permutations import *  # noqa: F401,F403
from .policy_losses import *  # noqa: F401,F403
from .rewards import *  # noqa: F401,F403
from .rng import RandomStream
from .sampling import *  # noqa: F401,F403
from .schedules import *  # noqa: F401,F403
from .selection import *  # noqa: F401,F403
from .sweep import sweep  # noqa: E402  (fastlmrl.sweep(...) is the function; ray loads lazily)
from .tabular_losses import *  # noqa: F401,F403
from .tabular_mdp import TabularMDP  # noqa: F401
from .td_learning import *  # noqa: F401,F403
from .tokenizers import *  # noqa: F401,F403

__all__ = [
    "BACKENDS",
    "BackendUnavailableWarning",
    "RandomStream",
    "Status",
    "__version__",
    "available_backends",
    "get_backend",
    "get_num_threads",
    "keyword_scores",
    "set_backend",
    "set_num_threads",
    "TabularMDP",
    "show_config",
    "sweep",
    "use_backend",
]
for _module in (
    selection,
    td_learning,
    monte_carlo,
    dynamic_programming,
    argmax_tree,
    schedules,
    log_probs,
    policy_losses,
    tabular_losses,
    advantages,
    group_advantages,
    kl_divergence,
    optimizers,
    environments,
    permutations,
    rewards,
    tokenizers,
    ngram,
    corpus,
    sampling,
):
    __all__ += _module.__all__
del _module
