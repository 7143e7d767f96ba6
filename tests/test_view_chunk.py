"""Multi-view in view chunks: the same outputs as one pass, the same ONNX signature."""

from __future__ import annotations

import pytest
import torch

from roadwork_ml.config import load_profile
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier, measure_view_chunk


@pytest.mark.parametrize("chunk", [1, 3, 4, 10])
def test_chunked_views_equal_one_pass(chunk):
    p = load_profile("tiny")
    torch.manual_seed(0)
    model = build_classifier(p.model).eval()
    x = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    one = MultiViewClassifier(model, view_spec(p.model, p.inference), "topk", top_k=3).eval()
    chunked = MultiViewClassifier(model, view_spec(p.model, p.inference), "topk", top_k=3, view_chunk=chunk).eval()
    with torch.no_grad():
        for a, b in zip(one(x), chunked(x), strict=False):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-6)


def test_measure_view_chunk_picks_a_timed_candidate():
    p = load_profile("tiny")
    mv = MultiViewClassifier(build_classifier(p.model), view_spec(p.model, p.inference), "mean").eval()
    best, rates = measure_view_chunk(mv, torch.rand(4, 3, 48, 48), candidates=[0, 2, 5], min_seconds=0.05)
    assert set(rates) == {0, 2, 5} and best in rates and mv.view_chunk == best and all(r > 0 for r in rates.values())
    with pytest.raises(ValueError, match="view_chunk"):
        MultiViewClassifier(mv.model, mv.spec, view_chunk=-1)
