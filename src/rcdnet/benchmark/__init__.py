"""``rcdnet benchmark``: RcdNet against other architectures and its own ablations, every row under the same split,
preprocessing and recipe, several seeds each, with bootstrap CIs, DeLong tests, size and speed.

profile.py (rows, seeds, preflight) -> run.py (one cached, resumable training run per row and seed) -> stats.py
(the numbers: seed means, CIs, DeLong) -> tables.py (CSVs, ROC figure) and markdown.py (benchmark.md).
"""

from rcdnet.benchmark.profile import BenchmarkError, load_profile, preflight
from rcdnet.benchmark.run import run_benchmark

__all__ = ["BenchmarkError", "load_profile", "preflight", "run_benchmark"]
