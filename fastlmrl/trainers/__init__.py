"""Trainers: one algorithm per module, each a thin loop over the kernels (see :mod:`.base`)."""
from .base import Trainer, explained_variance

__all__ = ["Trainer", "explained_variance"]
