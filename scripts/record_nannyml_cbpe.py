"""Record NannyML CBPE estimates as a test oracle (run in a separate venv with nannyml; never the runtime).

    python -m venv /tmp/nml && /tmp/nml/bin/pip install nannyml==0.13.1 statsmodels
    /tmp/nml/bin/python scripts/record_nannyml_cbpe.py tests/fixtures/nannyml_cbpe.json

Draws calibrated probabilities (p ~ Beta mixture, y ~ Bernoulli(p)) for a reference and
analysis chunks (one with covariate shift), runs NannyML's CBPE (chunk_size = the chunk, no
calibration: the scores are calibrated by construction) and writes the inputs and NannyML's
estimated accuracy, F1 and confusion matrix per chunk (NannyML 0.13 has no MCC; the test derives it) as JSON.
"""

import json
import sys

import nannyml as nml
import numpy as np
import pandas as pd


def draw(n, rng, a=0.6):
    p = np.where(rng.random(n) < a, rng.beta(1.2, 6, n), rng.beta(6, 1.5, n))
    return p, (rng.random(n) < p).astype(int)


def main(out):
    rng = np.random.default_rng(2026)
    chunk = 500
    p_ref, y_ref = draw(5000, rng)
    p_a = np.concatenate([draw(chunk, rng)[0], draw(chunk, rng, a=0.3)[0], draw(chunk, rng, a=0.8)[0]])
    ref = pd.DataFrame({"p": p_ref, "pred": (p_ref > 0.5).astype(int), "y": y_ref})
    ana = pd.DataFrame({"p": p_a, "pred": (p_a > 0.5).astype(int)})
    est = nml.CBPE(
        y_pred_proba="p",
        y_pred="pred",
        y_true="y",
        problem_type="classification_binary",
        metrics=["accuracy", "f1", "confusion_matrix"],
        chunk_size=chunk,
        calibration="isotonic",
    )
    est.fit(ref)
    est.needs_calibration = False  # the scores are calibrated by construction: compare the CBPE formulas themselves
    res = est.estimate(ana).filter(period="analysis").to_df()
    rows = []
    for i in range(len(res)):
        rows.append(
            {
                m: float(res[(m, "value")].iloc[i])
                for m in ("accuracy", "f1", "true_positive", "false_positive", "false_negative", "true_negative")
            }
        )
    with open(out, "w") as fh:
        json.dump({"nannyml": nml.__version__, "chunk": chunk, "probs": p_a.tolist(), "estimates": rows}, fh)
    print(rows)


if __name__ == "__main__":
    main(sys.argv[1])
