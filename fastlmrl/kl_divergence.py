"""kl_divergence (public API). To be written."""

__all__ = []
