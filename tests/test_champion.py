"""The champion / challenger state machine (roadwork_ml.evaluation.champion), every branch,
with the real statistical promotion gate deciding the contested cases."""

import numpy as np
import pytest

from roadwork_ml.evaluation.champion import TAG_FORCED, TAG_PREVIOUS, TAG_ROLLED_BACK, plan_promotion, plan_rollback
from roadwork_ml.evaluation.promotion import promotion_decision
from roadwork_ml.export.content_identity import PromotionEvent, promotion_verdict

# content ids: A the first champion, B a retrain that was rolled back, C new content
A, B, C = "a" * 64, "b" * 64, "c" * 64
HISTORY = [
    PromotionEvent("promote", "1", A),
    PromotionEvent("promote", "2", B),
    PromotionEvent("rollback", "1", A, from_version="2", from_content_id=B),
]
NEW = promotion_verdict(C, HISTORY)


def _never(champion):
    raise AssertionError("the promotion gate must not run here")


def _gate(new_quality: float):
    """A real paired-bootstrap gate: the champion is right on 90% of 400 images, the new bundle
    on ``new_quality`` of them (same images, same labels)."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)

    def probs(quality: float, seed: int) -> np.ndarray:
        right = np.random.default_rng(seed).random(400) < quality
        return np.where(right == (y == 1), 0.9, 0.1)

    return lambda champion: promotion_decision(
        y, probs(new_quality, 1), probs(0.9, 2), metric="mcc", margin=0.02, alpha=0.05, n_resamples=500, seed=0
    )


def test_first_version_is_promoted_without_a_comparison():
    plan = plan_promotion("1", None, None, verdict=NEW, deployed_exists=False, compare=_never)
    assert (plan.decision, plan.champion, plan.previous_champion, plan.aliases, plan.deploy_from) == (
        "promoted",
        "1",
        None,
        {"champion": "1"},
        "candidate",
    )


@pytest.mark.parametrize("deployed_exists, deploy_from", [(True, "current"), (False, "candidate")])
def test_the_champion_itself_is_unchanged(deployed_exists, deploy_from):
    plan = plan_promotion("3", "3", "2", verdict=NEW, deployed_exists=deployed_exists, compare=_never)
    assert (plan.decision, plan.aliases, plan.version_tags, plan.deploy_from) == ("unchanged", {}, {}, deploy_from)


def test_a_rolled_back_content_is_refused_whatever_its_version_and_the_gate():
    """The issue's sequence: v2 (content B) was rolled back to v1; a routine bundle+ of the same
    weights registers v3 with content B — refused, challenger, the gate never consulted."""
    plan = plan_promotion("3", "1", None, promotion_verdict(B, HISTORY), deployed_exists=True, compare=_never)
    assert (plan.decision, plan.champion, plan.aliases, plan.deploy_from) == (
        "refused",
        "1",
        {"challenger": "3"},
        "current",
    )
    assert "rolled back" in plan.reason and "version 2" in plan.reason


def test_a_forced_promotion_of_rolled_back_content_is_tagged_and_lifts_the_block():
    verdict = promotion_verdict(B, HISTORY, force=True, force_reason="the labels of the bad day were wrong")
    plan = plan_promotion("3", "1", None, verdict, deployed_exists=True, compare=_never)
    assert (plan.decision, plan.champion, plan.previous_champion, plan.deploy_from) == (
        "promoted",
        "3",
        "1",
        "candidate",
    )
    assert plan.version_tags["3"][TAG_FORCED].startswith("forced:") and "labels" in plan.version_tags["3"][TAG_FORCED]
    assert plan.version_tags["2"] == {TAG_ROLLED_BACK: "lifted by the forced promotion of version 3"}


def test_the_champions_content_under_a_new_version_is_a_no_op():
    plan = plan_promotion("3", "1", None, promotion_verdict(A, HISTORY), deployed_exists=True, compare=_never)
    assert (plan.decision, plan.aliases, plan.version_tags, plan.champion) == ("unchanged", {}, {}, "1")


def test_an_equivalent_bundle_is_promoted_and_the_old_champion_kept_for_rollback():
    plan = plan_promotion("4", "2", "1", verdict=NEW, deployed_exists=True, compare=_gate(0.9))
    assert plan.decision == "promoted" and plan.comparison is not None
    assert plan.aliases == {"previous_champion": "2", "champion": "4"} and plan.version_tags == {
        "4": {TAG_PREVIOUS: "2"}
    }
    assert (plan.champion, plan.previous_champion, plan.deploy_from) == ("4", "2", "candidate")


@pytest.mark.parametrize("deployed_exists, deploy_from", [(True, "current"), (False, "champion")])
def test_a_significantly_worse_bundle_becomes_the_challenger(deployed_exists, deploy_from):
    plan = plan_promotion("4", "2", "1", verdict=NEW, deployed_exists=deployed_exists, compare=_gate(0.6))
    assert plan.decision == "refused" and plan.comparison.significantly_worse
    assert (plan.champion, plan.previous_champion, plan.aliases, plan.deploy_from) == (
        "2",
        "1",
        {"challenger": "4"},
        deploy_from,
    )


def test_rollback_walks_the_chain_back_and_marks_the_demoted_version():
    plan = plan_rollback("3", "2", "1")
    assert plan.possible and (plan.from_version, plan.to_version, plan.new_previous) == ("3", "2", "1")
    assert plan.version_tags == {"3": {TAG_ROLLED_BACK: "true"}}
    end = plan_rollback("2", "1", None)
    assert end.possible and end.new_previous is None
    assert not plan_rollback("1", None, None).possible and not plan_rollback(None, None, None).possible
