"""ngram (public API). To be written."""

__all__ = []
