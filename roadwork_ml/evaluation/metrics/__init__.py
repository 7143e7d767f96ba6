"""Metrics for the binary "roadwork present?" classifier: pure numpy functions.

Modules: :mod:`._checks` (input checks, constants), :mod:`.classification`, :mod:`.calibration`,
:mod:`.selective` (risk-coverage and prediction sets), :mod:`.reports`; every public name is
re-exported here, so ``from roadwork_ml.evaluation.metrics import mcc`` keeps working.

Conventions (all functions)
---------------------------
- ``labels``: int array ``[N]``. Values in {0, 1} (1 = roadwork present) for the
  binary functions; in ``0..C-1`` where ``probs`` is ``[N, C]``.
- ``preds``: int or bool array ``[N]``, hard predictions in {0, 1}.
- ``scores``: float array ``[N]``, any real ranking score (higher = more positive);
  only the order matters.
- ``probs``: either ``[N]`` = probability of class 1, or ``[N, C]`` = class
  probabilities (rows sum to 1 within 1e-3). ``[N]`` is treated as ``[N, 2]`` =
  ``[1 - p, p]``, so every calibration metric gives the same number for both forms
  (Brier included, see :func:`brier`).
- ``confidence``: float ``[N]``, higher = more confident; ``correct``: bool/int
  ``[N]``, 1 where the prediction was right.
- Metrics in [0, 1] are fractions, not percent. Every function returns a Python
  ``float`` (or an ndarray where stated). Empty inputs, length mismatches,
  non-finite values, out-of-range labels or probabilities raise ``ValueError``.

Degenerate cases (same value as scikit-learn 1.9 unless marked *differs*)
--------------------------------------------------------------------------
- precision with no predicted positive, recall with no actual positive, F1 when
  ``2TP + FP + FN == 0``: 0.0 (sklearn ``zero_division="warn"`` returns 0.0).
- MCC when any marginal of the confusion matrix is zero (single class in labels or
  in preds, even if every prediction is right): 0.0 (sklearn).
- AUROC with a single class in ``labels``: nan (sklearn raises ``ValueError``).
- AUPRC with no positive label: *differs* — nan, because recall is undefined;
  sklearn returns 0.0 with an ``UndefinedMetricWarning``. A slice with no roadwork
  would otherwise read as "worst possible ranking". With only positives: 1.0 (sklearn).
- Selective metrics with no error anywhere: risks 0, AURC = AUGRC = 0.

Where our definitions differ from library X and why
---------------------------------------------------
- **torchmetrics ``BinaryCalibrationError``** bins ``p(class 1)`` against the
  label (a positive-class reliability error, although its docstring says
  "top-label"). Our :func:`ece` / :func:`mce` are *top-label* for binary input too:
  confidence ``max(p, 1 - p)``, hit = (argmax == label). This equals torchmetrics
  ``MulticlassCalibrationError`` on ``[1 - p, p]``. The positive-class view is part of
  :func:`sce` (which averages the class-0 and class-1 reliability errors).
- **Bin edges (torchmetrics)**: torchmetrics uses ``torch.bucketize(right=True)``,
  i.e. left-closed bins ``[k/B, (k+1)/B)`` plus an extra bin that holds exactly 1.0.
  We use B right-closed bins ``(k/B, (k+1)/B]`` with the first bin closed
  ``[0, 1/B]`` (edges ``np.linspace(0, 1, B + 1)``), the convention of Guo et al.
  2017's reference code and of ``sklearn.calibration.calibration_curve``; every value
  in [0, 1] falls in exactly one of B bins and a saturated confidence 1.0 shares the
  top bin. The two agree whenever no confidence lies exactly on an edge or at 1.0;
  quantized outputs (fp16, histogram calibrators, saturated sigmoids) can differ.
  torchmetrics' multiclass path also casts confidences to float32; we stay float64.
- **ACE (Nixon et al. 2019)** is defined with R ranges of equal size and weight
  1/(K R). When N is not divisible by R we use ``np.array_split`` (sizes differ by at
  most one) and weight each range by its share of samples (= 1/R when divisible;
  empty ranges, possible when N < R, get weight 0). Ties in a class probability are
  ordered by the class indicator (0 first) so the result does not depend on the
  order of the rows.
- **Brier**: binary (``[N]`` or ``[N, 2]``) = ``mean((p1 - y)^2)`` (sklearn,
  range [0, 1]); C > 2 = ``mean(sum_k (p_k - 1[y=k])^2)`` (original Brier 1950,
  range [0, 2]). This is sklearn's ``scale_by_half="auto"``.
- **NLL**: the probability of the true class is clipped below at 1e-12; sklearn's
  ``log_loss`` clips every probability to ``[eps, 1 - eps]`` (float64 eps ~2.2e-16),
  so the two agree unless a true-class probability is below 1e-12 or above 1 - eps.
  The mean is in nats. Neither renormalises rows (sklearn warns when rows do not sum
  to 1; we raise beyond 1e-3).
- **AURC / AUGRC** follow Traub et al. 2024 (NeurIPS, "Overcoming Common Flaws in
  the Evaluation of Selective Classification Systems") and their reference code
  (``fd_shifts.analysis.rc_stats``): the risk-coverage curve has one point per
  *distinct* confidence value (a tie group is accepted or rejected as a whole), and
  the area is the trapezoid rule over those points. AUGRC closes the curve at
  (coverage 0, risk 0); AURC extends the selective risk of the smallest accepted set
  flat to coverage 0. AUGRC equals
  ``(1 - AUROC_f) * acc * (1 - acc) + (1 - acc)^2 / 2`` exactly, ties included
  (AUROC_f: confidence separating correct from wrong, ties counted 1/2). Geifman & El-Yaniv's per-sample AURC ``mean_k risk(top k)`` depends on
  the row order under ties; without ties ours = that + ``(risk_1 - risk_N) / (2N)``
  (risk_k: selective risk of the k most confident samples).
- **Working points** are read off the same curve: ``coverage_at_risk`` = largest
  coverage with selective risk <= target (0.0 if none); ``risk_at_coverage`` = lowest
  selective risk among thresholds with coverage >= target, as fd-shifts'
  ``get_working_point``; a tie group is never split, so no interpolation.
"""

from __future__ import annotations

from roadwork_ml.evaluation.metrics._checks import COVERAGE_TARGETS, DEFAULT_N_BINS, NLL_EPS, RISK_TARGETS
from roadwork_ml.evaluation.metrics.calibration import ace, brier, ece, mce, nll, reliability_bins, sce, top_label
from roadwork_ml.evaluation.metrics.classification import accuracy, auprc, auroc, confusion, f1, mcc, precision, recall
from roadwork_ml.evaluation.metrics.reports import calibration_report, classification_report, selective_report
from roadwork_ml.evaluation.metrics.selective import (
    augrc,
    aurc,
    coverage_at_risk,
    empty_rate,
    risk_at_coverage,
    risk_coverage_curve,
    set_average_size,
    set_coverage,
    singleton_rate,
)

__all__ = [
    # classification
    "confusion",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "mcc",
    "auroc",
    "auprc",
    # calibration
    "top_label",
    "reliability_bins",
    "ece",
    "mce",
    "sce",
    "ace",
    "brier",
    "nll",
    # selective
    "risk_coverage_curve",
    "aurc",
    "augrc",
    "coverage_at_risk",
    "risk_at_coverage",
    # prediction sets
    "set_coverage",
    "set_average_size",
    "singleton_rate",
    "empty_rate",
    # reports
    "classification_report",
    "calibration_report",
    "selective_report",
    "DEFAULT_N_BINS",
    "NLL_EPS",
    "RISK_TARGETS",
    "COVERAGE_TARGETS",
]
