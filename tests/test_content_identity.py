"""Model content identity and the rollback-respecting promotion rule (issue 15 item 4, library part)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from roadwork_ml.export.content_identity import PromotionEvent, content_id, content_id_from_parts, promotion_verdict


def _bundle(d, weights: dict[str, torch.Tensor], calibrator: dict, policy: dict, metadata: dict | None = None):
    d.mkdir(parents=True)
    save_file(weights, str(d / "model.safetensors"), metadata=metadata)
    (d / "calibrator.json").write_text(json.dumps(calibrator, indent=2))
    (d / "policy.json").write_text(json.dumps(policy))
    (d / "manifest.json").write_text(json.dumps({"created": str(d)}))  # differs per bundle, not content
    return d


@pytest.fixture
def weights():
    g = torch.Generator().manual_seed(0)
    return {"head.weight": torch.randn(2, 8, generator=g), "backbone.conv": torch.randn(4, 3, 3, 3, generator=g)}


CAL = {"kind": "temperature", "temperature": 1.3}
POL = {"kind": "scrc", "threshold": 0.8}


def test_same_content_same_id_whatever_the_packaging(tmp_path, weights):
    a = content_id(_bundle(tmp_path / "v2", weights, CAL, POL, metadata={"created": "monday"}))
    reordered = dict(reversed(list(weights.items())))
    b = content_id(
        _bundle(tmp_path / "v3", reordered, dict(reversed(list(CAL.items()))), POL, metadata={"created": "tuesday"})
    )
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert set(a.parts) == {"weights", "calibrator", "policy"}


def test_any_change_of_weights_calibrator_or_policy_changes_the_id(tmp_path, weights):
    base = content_id(_bundle(tmp_path / "a", weights, CAL, POL)).sha256
    w2 = {k: v.clone() for k, v in weights.items()}
    w2["head.weight"][0, 0] += 1e-6
    assert content_id(_bundle(tmp_path / "b", w2, CAL, POL)).sha256 != base
    assert content_id(_bundle(tmp_path / "c", weights, {**CAL, "temperature": 1.31}, POL)).sha256 != base
    assert content_id(_bundle(tmp_path / "d", weights, CAL, {**POL, "threshold": 0.81})).sha256 != base
    (tmp_path / "e").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        content_id(tmp_path / "e")


def test_in_memory_and_on_disk_ids_agree(tmp_path, weights):
    disk = content_id(_bundle(tmp_path / "a", weights, CAL, POL))
    mem = content_id_from_parts({k: v.numpy() for k, v in weights.items()}, CAL, POL)
    assert disk == mem


def test_retrain_rollback_then_bundle_plus_is_refused_until_content_differs():
    """v1 champion -> retrain v2 (content B) -> drift rollback to v1 -> CI bundle+ re-bundles B as v3."""
    A, B, C = "a" * 64, "b" * 64, "c" * 64
    history = [PromotionEvent("promote", "1", A)]
    assert promotion_verdict(B, history).allowed  # the retrain: new content
    history.append(PromotionEvent("promote", "2", B))
    history.append(
        PromotionEvent("rollback", "1", A, from_version="2", from_content_id=B, reason="labelled accuracy 0.65")
    )
    v3 = promotion_verdict(B, history)  # routine bundle+ of the same phase-1 weights
    assert not v3.allowed and not v3.forced and v3.blocked_by == "2" and "rolled back" in v3.reason
    assert not promotion_verdict(A, history).allowed  # re-promoting the champion's own content is a no-op
    forced = promotion_verdict(B, history, force=True, force_reason="label bug found, v2 was fine")
    assert forced.allowed and forced.forced and "label bug" in forced.reason
    with pytest.raises(ValueError, match="reason"):
        promotion_verdict(B, history, force=True, force_reason=" ")
    assert promotion_verdict(C, history).allowed  # a retrain on new data: different content
    # a forced promotion lifts the block; a second rollback of it sets it again
    history.append(PromotionEvent("forced_promote", "3", B, reason="label bug"))
    assert promotion_verdict(C, history).allowed and not promotion_verdict(B, history).allowed  # B is champion now
    history.append(PromotionEvent("rollback", "1", A, from_version="3", from_content_id=B))
    assert promotion_verdict(B, history).blocked_by == "3"


def test_history_must_be_well_formed():
    with pytest.raises(ValueError, match="rolled back"):
        promotion_verdict("x", [PromotionEvent("rollback", "1", "a")])
    with pytest.raises(ValueError, match="kind"):
        promotion_verdict("x", [PromotionEvent("retire", "1", "a")])  # type: ignore[arg-type]
    assert promotion_verdict("x", []).allowed  # no history: anything new may be promoted
