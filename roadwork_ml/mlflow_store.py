"""Where the MLflow tracking store and its artifacts live, and how an embedded store follows
its instance when the instance directory is moved or restored from a backup.

MLflow writes absolute locations into its database: each experiment's ``artifact_location``,
each run's ``artifact_uri``, each model version's ``source`` / ``storage_location`` and each
logged model's ``artifact_location``. For the embedded default (SQLite + a local artifact
directory, both under the instance) those point into the instance directory. ``open_local_store``
records the instance directory the store was written under (``mlflow_root.json`` next to the
database) and, when the instance now sits elsewhere, rewrites the recorded prefix to the current
one in one transaction, so every stored location stays relative to the instance. Configured
stores (``MLFLOW_TRACKING_URI`` = Postgres, artifacts on ``mlflow-artifacts:`` / ``s3://`` /
a volume mounted at a fixed path) hold no instance path and are left alone.
"""

import json
import os
from pathlib import Path

ROOT_MARKER = "mlflow_root.json"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ARTIFACT_ROOT_ENV = "ROADWORK_MLFLOW_ARTIFACT_ROOT"

# (table, column) pairs holding artifact locations, across MLflow 2.x / 3.x schemas; a pair
# whose table or column does not exist in this database is skipped.
LOCATION_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def tracking_uri(home: Path, configured: str | None = None) -> str:
    """The tracking/registry URI: ``configured``, else $MLFLOW_TRACKING_URI, else the embedded
    ``sqlite:///<home>/mlflow.db``."""
    return configured or os.environ.get(TRACKING_URI_ENV) or f"sqlite:///{Path(home) / 'mlflow.db'}"


def artifact_root(home: Path, configured: str | None = None) -> str:
    """Artifact location for new experiments, as a URI: ``configured``, else
    $ROADWORK_MLFLOW_ARTIFACT_ROOT, else ``<home>/mlartifacts``. Plain paths become file URIs;
    any other URI (``mlflow-artifacts:/``, ``s3://...``) is returned unchanged."""
    value = configured or os.environ.get(ARTIFACT_ROOT_ENV)
    if not value:
        return (Path(home) / "mlartifacts").resolve().as_uri()
    if "://" in value or value.startswith("mlflow-artifacts:"):
        return value
    return Path(value).expanduser().resolve().as_uri()


def is_embedded(uri: str, home: Path) -> bool:
    """Whether ``uri`` is the SQLite database directly under ``home``."""
    return uri == f"sqlite:///{Path(home) / 'mlflow.db'}"


def rebase_locations(db_uri: str, old_root: Path, new_root: Path) -> int:
    """Rewrite every stored location under ``old_root`` (plain path or file URI) to the same
    place under ``new_root``; one transaction. Returns the number of rows changed."""
    import sqlalchemy as sa

    old_root, new_root = Path(old_root), Path(new_root)
    pairs = [
        (old_root.as_uri(), new_root.as_uri()),
        (f"file://{old_root}", f"file://{new_root}"),
        (str(old_root), str(new_root)),
    ]
    engine = sa.create_engine(db_uri)
    changed = 0
    try:
        with engine.begin() as conn:
            inspector = sa.inspect(conn)
            tables = set(inspector.get_table_names())
            for table, column in LOCATION_COLUMNS:
                if table not in tables or column not in {c["name"] for c in inspector.get_columns(table)}:
                    continue
                for old, new in pairs:
                    # prefix match only, followed by '/' or end, so /a/home never matches /a/home2
                    stmt = sa.text(
                        f"UPDATE {table} SET {column} = :new || substr({column}, :n) WHERE {column} = :old OR substr({column}, 1, :n1) = :old_slash"
                    )
                    res = conn.execute(
                        stmt,
                        {
                            "new": new,
                            "n": len(old) + 1,
                            "old": old,
                            "n1": len(old) + 1,
                            "old_slash": old + "/",
                        },
                    )
                    changed += res.rowcount or 0
    finally:
        engine.dispose()
    return changed


def open_local_store(home: Path) -> int:
    """Make the embedded store under ``home`` point into ``home``: on first use record ``home``;
    after a move or restore rebase the recorded root onto ``home``. Returns rows rewritten."""
    home = Path(home).resolve()
    marker = home / ROOT_MARKER
    db = home / "mlflow.db"
    if not marker.exists():  # first use (a store from before the marker is taken as written here)
        _write_marker(marker, home)
        return 0
    recorded = Path(json.loads(marker.read_text())["root"])
    if recorded == home:
        return 0
    changed = rebase_locations(f"sqlite:///{db}", recorded, home) if db.exists() else 0
    _write_marker(marker, home)
    return changed


def _write_marker(marker: Path, home: Path) -> None:
    marker.parent.mkdir(parents=True, exist_ok=True)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"root": str(home)}))
    os.replace(tmp, marker)
