"""Trainers: one algorithm per module, each a thin loop over the kernels (see :mod:`.base`).

``ALGORITHMS`` maps the names used by ``fastlmrl train --algo`` to trainer classes.  The ones in
``TEXT_ALGORITHMS`` train a softmax policy on a :class:`fastlmrl.tasks.TextTask`; the others
(tabular value methods and planners) take an environment (:class:`fastlmrl.ContextMDP` or
:class:`fastlmrl.TextGenerationEnv`).
"""

from .a2c import A2CConfig, A2CTrainer
from .base import Trainer, explained_variance
from .double_q_learning import DoubleQLearningConfig, DoubleQLearningTrainer
from .expected_sarsa import ExpectedSarsaConfig, ExpectedSarsaTrainer
from .grpo import GRPOConfig, GRPOTrainer
from .monte_carlo import MonteCarloConfig, MonteCarloTrainer
from .planners import (
    PolicyIterationConfig,
    PolicyIterationPlanner,
    ValueIterationConfig,
    ValueIterationPlanner,
)
from .ppo import PPOConfig, PPOTrainer
from .q_learning import QLearningConfig, QLearningTrainer
from .reinforce import ReinforceConfig, ReinforceTrainer
from .rloo import RLOOConfig, RLOOTrainer
from .sarsa import SarsaConfig, SarsaTrainer

# The neural trainers import torch: loaded on first access (``import fastlmrl`` stays torch-free).
_NEURAL = {
    "NeuralGRPOConfig": "neural_grpo",
    "NeuralGRPOTrainer": "neural_grpo",
    "NeuralPPOConfig": "neural_ppo",
    "NeuralPPOTrainer": "neural_ppo",
    "NeuralReinforceConfig": "neural_reinforce",
    "NeuralReinforceTrainer": "neural_reinforce",
    "NeuralRLOOConfig": "neural_rloo",
    "NeuralRLOOTrainer": "neural_rloo",
}


def __getattr__(name):
    import importlib

    if name in _NEURAL:
        return getattr(importlib.import_module(f".{_NEURAL[name]}", __name__), name)
    if name == "NEURAL_ALGORITHMS":  # names used by ``fastlmrl train --policy neural --algo``
        classes = [__getattr__(n) for n in _NEURAL if n.endswith("Trainer")]
        return {cls.algorithm.removeprefix("neural_"): cls for cls in classes}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


TEXT_ALGORITHMS = {
    cls.algorithm: cls
    for cls in (ReinforceTrainer, A2CTrainer, PPOTrainer, GRPOTrainer, RLOOTrainer)
}
VALUE_ALGORITHMS = {
    cls.algorithm: cls
    for cls in (
        QLearningTrainer,
        SarsaTrainer,
        ExpectedSarsaTrainer,
        DoubleQLearningTrainer,
        MonteCarloTrainer,
        ValueIterationPlanner,
        PolicyIterationPlanner,
    )
}
ALGORITHMS = {**VALUE_ALGORITHMS, **TEXT_ALGORITHMS}

__all__ = [
    "A2CConfig",
    "A2CTrainer",
    "ALGORITHMS",
    "DoubleQLearningConfig",
    "DoubleQLearningTrainer",
    "ExpectedSarsaConfig",
    "ExpectedSarsaTrainer",
    "GRPOConfig",
    "GRPOTrainer",
    "MonteCarloConfig",
    "MonteCarloTrainer",
    "PPOConfig",
    "PPOTrainer",
    "PolicyIterationConfig",
    "PolicyIterationPlanner",
    "QLearningConfig",
    "QLearningTrainer",
    "RLOOConfig",
    "RLOOTrainer",
    "ReinforceConfig",
    "ReinforceTrainer",
    "SarsaConfig",
    "SarsaTrainer",
    "TEXT_ALGORITHMS",
    "Trainer",
    "VALUE_ALGORITHMS",
    "ValueIterationConfig",
    "ValueIterationPlanner",
    "explained_variance",
    *_NEURAL,
    "NEURAL_ALGORITHMS",
]
