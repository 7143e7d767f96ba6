"""Escalation: what the platform does when the drift rules ask for an action that cannot happen
(no earlier champion to roll back to, a retrain still in its cooldown).

It does not carry on quietly: the sensor raises a *critical* alert (log, webhook, audit) and puts
serving into the escalated state, in which the SCRC decision policy runs at the stricter
selective risk ``monitoring.escalation_scrc_alpha`` (more images deferred) until a new champion
is promoted or a human clears it:

    python -m roadwork_assets.escalation status
    python -m roadwork_assets.escalation clear --reason "labels of 11-09 re-checked, model is fine"

Every change of state is in the audit record.
"""

import argparse
import json

from roadwork_assets.audit import record_action
from roadwork_assets.resources import ArtifactStore
from roadwork_ml.artifacts import atomic_write_json

ESCALATION_FILE = ("audit", "escalation.json")


def escalation_state(store: ArtifactStore) -> dict | None:
    """The active escalation (``since``, ``state``, ``scrc_alpha``, ...) or None."""
    path = store.path(*ESCALATION_FILE)
    return json.loads(path.read_text()) if path.exists() else None


def escalate(store: ArtifactStore, *, day: str, state: str, scrc_alpha: float, **fields) -> dict:
    """Enter (or stay in) the escalated state; audited as ``escalation`` (severity critical)."""
    current = escalation_state(store)
    entry = record_action(
        store,
        "escalation",
        severity="critical",
        day=day,
        state=state,
        scrc_alpha=scrc_alpha,
        already_escalated_since=(current or {}).get("since"),
        **fields,
    )
    if current is None:
        atomic_write_json(
            store.path(*ESCALATION_FILE),
            {"since": day, "time": entry["time"], "state": state, "scrc_alpha": scrc_alpha, **fields},
        )
    return entry


def clear_escalation(store: ArtifactStore, *, by: str, reason: str) -> dict | None:
    """Leave the escalated state (a new champion, or a human with a reason); audited. None if not escalated."""
    current = escalation_state(store)
    if current is None:
        return None
    if not reason.strip():
        raise ValueError("clearing an escalation needs a reason (it goes to the audit record)")
    store.path(*ESCALATION_FILE).unlink()
    return record_action(store, "escalation_cleared", by=by, reason=reason, was=current)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="show or clear the escalated state ($DAGSTER_HOME's artifact store)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status")
    clear = sub.add_parser("clear")
    clear.add_argument("--reason", required=True)
    clear.add_argument("--by", default="a human (CLI)")
    args = parser.parse_args(argv)
    store = ArtifactStore()
    if args.command == "status":
        state = escalation_state(store)
        print(json.dumps(state, indent=1) if state else "not escalated")
        return
    entry = clear_escalation(store, by=args.by, reason=args.reason)
    print("not escalated: nothing to clear" if entry is None else f"cleared: {json.dumps(entry)}")


if __name__ == "__main__":
    main()
