"""alibi-detect's MMD drift detector as a peer: run it in ``.venv-peers`` only (see requirements.txt).

Standalone on purpose (imports no roadwork code, whose runtime needs numpy 2):

    .venv-peers/bin/python bench/peers/alibi_mmd.py --x x.npy --y y.npy --permutations 100 [--sigma S]

Prints one JSON object: ``seconds`` (construction + ``score``), ``statistic``, ``p_value``,
``sigma`` (the bandwidth alibi used: the given one, or its median heuristic on ``x``) and the
versions of alibi-detect, numpy and torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings


def run(x, y, n_permutations: int, sigma: float | None, device: str = "cpu") -> dict:
    """alibi-detect 0.13 ``MMDDrift(backend="pytorch")`` on reference ``x`` [N, D] and current ``y`` [M, D]."""
    import numpy as np

    logging.getLogger("alibi_detect").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import alibi_detect
        import torch
        from alibi_detect.cd import MMDDrift

        t0 = time.perf_counter()
        kw = {} if sigma is None else {"sigma": np.array([sigma], dtype=x.dtype)}
        det = MMDDrift(x, backend="pytorch", p_val=0.05, n_permutations=n_permutations, device=device, **kw)
        p, stat, _ = det.score(y)
        seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "statistic": float(stat),
        "p_value": float(p),
        "sigma": float(np.asarray(det._detector.kernel.sigma.detach().cpu()).ravel()[0]),
        "versions": {"alibi_detect": alibi_detect.__version__, "numpy": np.__version__, "torch": torch.__version__},
    }


def main() -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--x", required=True, help=".npy reference sample [N, D]")
    ap.add_argument("--y", required=True, help=".npy current sample [M, D]")
    ap.add_argument("--permutations", type=int, default=100)
    ap.add_argument("--sigma", type=float, default=None, help="RBF bandwidth; default: alibi's median heuristic")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    print(json.dumps(run(np.load(args.x), np.load(args.y), args.permutations, args.sigma, args.device)))


if __name__ == "__main__":
    main()
