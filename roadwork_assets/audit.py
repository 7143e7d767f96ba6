"""The audit record: one JSON line per automated action (promotion, refusal, retrain, rollback,
alert), appended under an exclusive lock so concurrent runs never interleave lines."""

import fcntl
import json
import os
from datetime import UTC, datetime
from pathlib import Path

from roadwork_assets.resources import ArtifactStore

AUDIT_FILE = ("audit", "actions.jsonl")


def record_action(store: ArtifactStore, action: str, **fields) -> dict:
    """Append ``{"time", "action", **fields}`` to the audit log and return it."""
    entry = {"time": datetime.now(UTC).isoformat(timespec="seconds"), "action": action, **fields}
    path = store.path(*AUDIT_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(json.dumps(entry, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
        fcntl.flock(fh, fcntl.LOCK_UN)
    return entry


def record_launch(context, store: ArtifactStore) -> dict | None:
    """In the first step of a run the drift sensor launched (tag ``roadwork/action``): record
    ``<action>_launched`` with the run id, so the audit record holds runs that exist."""
    tags = context.run.tags
    action = tags.get("roadwork/action")
    if not action:
        return None
    return record_action(
        store,
        f"{action}_launched",
        run_id=context.run_id,
        job=context.run.job_name,
        day=tags.get("roadwork/drift_day"),
        run_key=tags.get("dagster/run_key"),
        launched_by=tags.get("dagster/sensor_name") or tags.get("roadwork/backfill") or "by hand",
    )


def read_actions(store: ArtifactStore) -> list[dict]:
    path: Path = store.path(*AUDIT_FILE)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
