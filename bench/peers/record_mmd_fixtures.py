"""Record alibi-detect's MMD values as test fixtures: ``tests/fixtures/mmd_alibi.json``.

alibi-detect is the oracle for :func:`roadwork_ml.monitoring.drift_stats.mmd_permutation_test`,
but it needs numpy < 2, so it cannot live in the runtime or test environment. This script runs
in ``.venv-peers`` (``make peers``) and writes, for each case, the inputs' recipe and sha256, the
bandwidth alibi infers (median heuristic), and alibi's statistic at that bandwidth; the test
regenerates the inputs, checks their sha256 and compares our values with the recorded ones.

    make peers && .venv-peers/bin/python bench/peers/record_mmd_fixtures.py
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from alibi_mmd import run  # noqa: E402

OUT = HERE.parents[1] / "tests" / "fixtures" / "mmd_alibi.json"
RECIPE = (
    "rng = np.random.default_rng(seed); x = rng.normal(size=(n_x, d)).astype(dtype); "
    "y = (rng.normal(size=(n_y, d)) + shift).astype(dtype)"
)


def inputs(seed: int, n_x: int, n_y: int, d: int, shift: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixture's inputs, exactly as :data:`RECIPE` says (the test uses the same code)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_x, d)).astype(dtype)
    y = (rng.normal(size=(n_y, d)) + shift).astype(dtype)
    return x, y


def sha256_arrays(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode() + np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def main() -> None:
    cases = []
    for dtype in ("float64", "float32"):
        spec = {"seed": 3, "n_x": 300, "n_y": 200, "d": 16, "shift": 0.15, "dtype": dtype}
        x, y = inputs(**spec)
        inferred = run(x, y, n_permutations=20, sigma=None)
        at_sigma = run(x, y, n_permutations=50, sigma=inferred["sigma"])
        cases.append(
            {
                "inputs": spec,
                "inputs_sha256": sha256_arrays(x, y),
                "alibi_sigma_median_heuristic": inferred["sigma"],
                "alibi_statistic_at_that_sigma": at_sigma["statistic"],
            }
        )
    doc = {
        "what": "alibi-detect MMDDrift(backend='pytorch', p_val=0.05, device='cpu') on seeded Gaussians: the bandwidth its "
        "median heuristic infers (sigma=None, n_permutations=20) and score(y)'s statistic with sigma set to it "
        "(n_permutations=50; the statistic does not depend on the permutations)",
        "provenance": {
            "script": "bench/peers/record_mmd_fixtures.py (run in .venv-peers, see bench/peers/requirements.txt)",
            "inputs_recipe": RECIPE,
            "versions": inferred["versions"],
            "python": platform.python_version(),
        },
        "cases": cases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
