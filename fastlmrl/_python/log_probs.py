"""Reference log_probs kernels (plain Python)."""

__all__ = []
