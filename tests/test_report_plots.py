"""roadwork_ml.evaluation.report_plots: PNG files and input checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from roadwork_ml.evaluation.report_plots import confidence_histogram, risk_coverage_plot, slice_heatmap

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path, min_bytes: int = 5000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > min_bytes
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 200 and im.size[1] > 150
        assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temp file left behind


def _conf_correct(n: int = 500):
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.random(n) < conf
    return conf, correct


def test_confidence_histogram(tmp_path):
    conf, correct = _conf_correct()
    out = confidence_histogram(conf, correct, tmp_path / "sub" / "hist.png")
    _assert_png(out)
    with pytest.raises(ValueError, match="equally long"):
        confidence_histogram(conf[:-1], correct, tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


def test_risk_coverage_plot(tmp_path):
    conf, correct = _conf_correct()
    out = risk_coverage_plot(
        conf, correct, tmp_path / "rc.png", operating_points={"exit tau": (0.8, 0.12), "gate": (0.6, 0.05)}
    )
    _assert_png(out)
    _assert_png(risk_coverage_plot(conf, correct, tmp_path / "rc2.png"))
    with pytest.raises(ValueError, match="equally long"):
        risk_coverage_plot(conf, correct[:10], tmp_path / "bad.png")


def test_slice_heatmap(tmp_path):
    times, weathers = ["day", "night", "dawn", "dusk"], ["clear", "rain", "snow", "fog"]
    acc = pd.DataFrame(np.random.default_rng(1).uniform(0.5, 1, (4, 4)), index=times, columns=weathers)
    cnt = pd.DataFrame(np.full((4, 4), 30), index=times, columns=weathers)
    acc.loc["night", "fog"] = np.nan
    cnt.loc["night", "fog"] = 0
    _assert_png(slice_heatmap(acc, cnt, tmp_path / "heat.png", "accuracy"))
    with pytest.raises(ValueError, match="same shape"):
        slice_heatmap(acc, cnt.iloc[:2], tmp_path / "bad.png", "x")
