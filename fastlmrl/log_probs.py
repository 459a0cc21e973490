"""log_probs (public API). To be written."""

__all__ = []
