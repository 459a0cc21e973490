"""``nt``: benchmarks/numpy_trainers.py (the NumPy twins of the trainers and of the reward), loaded
for the tests that check them against fastlmrl."""

import importlib.util
import sys
from pathlib import Path


def _load_numpy_trainers():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "numpy_trainers.py"
    spec = importlib.util.spec_from_file_location("numpy_trainers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("numpy_trainers", module)
    spec.loader.exec_module(module)
    return module


nt = _load_numpy_trainers()
