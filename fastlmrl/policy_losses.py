"""policy_losses (public API). To be written."""

__all__ = []
