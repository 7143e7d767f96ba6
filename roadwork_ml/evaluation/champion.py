"""The champion / challenger state machine of the model registry, as pure functions.

Aliases: ``champion`` (deployed), ``previous_champion`` (what a rollback returns to),
``challenger`` (a refused candidate). Promotion is keyed on the model's *content* (weights,
calibrator, policy: :mod:`roadwork_ml.export.content_identity`), not on the registry version: a
candidate whose content equals a rolled-back version's is refused — whatever its version number —
unless the run forces it (audited; the block on that content is then lifted), and one equal to
the champion's content is a no-op. :func:`plan_promotion` and :func:`plan_rollback` decide; the
caller applies the alias and tag changes to the registry and copies the bundle the plan names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from roadwork_ml.evaluation.promotion import PromotionDecision
from roadwork_ml.export.content_identity import PromotionVerdict

TAG_PREVIOUS = "roadwork.previous_champion"
TAG_ROLLED_BACK = "roadwork.rolled_back"  # "true" blocks the version's content; anything else records why not
TAG_CONTENT = "roadwork.content_id"
TAG_FORCED = "roadwork.forced_promotion"


@dataclass(frozen=True)
class PromotionPlan:
    """``aliases``: alias → version to set; ``version_tags``: version → {tag: value} to set;
    ``deploy_from``: which bundle the deployed copy is made of — the ``candidate`` bundle, the
    registry's ``champion`` version, or the ``current`` deployed copy (record refreshed only)."""

    decision: Literal["promoted", "refused", "unchanged"]
    reason: str
    champion: str | None
    previous_champion: str | None
    aliases: dict[str, str] = field(default_factory=dict)
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)
    deploy_from: Literal["candidate", "champion", "current"] = "current"
    comparison: object | None = None


def plan_promotion(
    version: str,
    champion: str | None,
    previous: str | None,
    verdict: PromotionVerdict,
    deployed_exists: bool,
    compare: Callable[[str], PromotionDecision],
) -> PromotionPlan:
    """Decide what happens to candidate ``version`` given the registry's current ``champion``
    and ``previous`` aliases and the content ``verdict`` (:func:`~roadwork_ml.export.content_identity.promotion_verdict`
    of the candidate's content against the registry's history). ``compare(champion)`` runs the
    statistical promotion gate; it is called only when a real comparison is needed (a forced
    promotion skips it: a human decided)."""
    comparison = None
    if champion == version:
        decision, reason = "unchanged", f"version {version} is already the champion"
    elif verdict.repeats == "champion" and not verdict.forced:
        decision, reason = "unchanged", verdict.reason
    elif not verdict.allowed:
        decision, reason = "refused", verdict.reason
    elif verdict.forced:
        decision, reason = "promoted", verdict.reason
    elif champion is None:
        decision, reason = "promoted", "no champion yet"
    else:
        gate = compare(champion)
        comparison = gate.comparison
        decision, reason = ("promoted" if gate.promote else "refused"), gate.reason

    aliases: dict[str, str] = {}
    tags: dict[str, dict[str, str]] = {}
    new_champion, new_previous = champion, previous
    if decision == "promoted":
        if champion is not None:
            aliases["previous_champion"] = champion
            tags[version] = {TAG_PREVIOUS: champion}
            new_previous = champion
        aliases["champion"] = version
        new_champion = version
    elif decision == "refused":
        aliases["challenger"] = version
    if decision == "promoted" and verdict.forced:
        tags.setdefault(version, {})[TAG_FORCED] = verdict.reason
        if verdict.blocked_by is not None:  # a human overrode the rollback: lift the block on that content
            tags[verdict.blocked_by] = {TAG_ROLLED_BACK: f"lifted by the forced promotion of version {version}"}
    if decision == "promoted" or not deployed_exists:
        deploy_from = "candidate" if new_champion == version else "champion"
    else:
        deploy_from = "current"
    return PromotionPlan(decision, reason, new_champion, new_previous, aliases, tags, deploy_from, comparison)


@dataclass(frozen=True)
class RollbackPlan:
    """``possible`` False: nothing to roll back to (no champion or no previous champion)."""

    possible: bool
    from_version: str | None
    to_version: str | None
    new_previous: str | None
    version_tags: dict[str, dict[str, str]] = field(default_factory=dict)


def plan_rollback(champion: str | None, previous: str | None, previous_of_previous: str | None) -> RollbackPlan:
    """Move ``champion`` back to ``previous``; the demoted version is tagged rolled back and the
    chain of previous champions moves one step back (``previous_of_previous`` is the previous
    champion's own predecessor, None at the start of the chain)."""
    if champion is None or previous is None:
        return RollbackPlan(False, champion, previous, previous)
    return RollbackPlan(True, champion, previous, previous_of_previous, {champion: {TAG_ROLLED_BACK: "true"}})
