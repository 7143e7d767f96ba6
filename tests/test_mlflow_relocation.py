"""The embedded MLflow store follows its instance: an instance directory moved, or restored
from a backup into another place, still downloads its registered bundle from inside itself;
without the rebase the stored absolute locations point at the old place."""

import shutil
import sqlite3
from pathlib import Path

import pytest

from roadwork_assets.resources import MlflowTracking
from roadwork_ml import mlflow_store


def _locations(db: Path) -> list[str]:
    # MLflow's own "Default" experiment (never used by roadwork) records ./mlruns of the process
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT artifact_location FROM experiments WHERE name != 'Default' UNION ALL SELECT artifact_uri FROM runs UNION ALL SELECT source FROM model_versions"
        ).fetchall()
    return [r[0] for r in rows if r[0]]


def _populate(home: Path) -> tuple[str, str]:
    bundle = home.parent / "bundle_src"
    bundle.mkdir()
    (bundle / "weights.bin").write_bytes(b"\x00\x01roadwork" * 100)
    mlflow = MlflowTracking()
    with mlflow.run("relocation", "r1") as run:
        run.log_metrics({"mcc": 0.5})
        run.log_artifacts(bundle, "bundle")
    version = mlflow.register_version("roadwork-test", run.run_id, "bundle")
    mlflow.set_alias("roadwork-test", "champion", version)
    return run.run_id, version


@pytest.mark.parametrize("how", ["move", "restore"])
def test_instance_moved_or_restored_keeps_its_mlflow_store(tmp_path, monkeypatch, how):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(mlflow_store.ARTIFACT_ROOT_ENV, raising=False)
    old = tmp_path / "old_home"
    monkeypatch.setenv("DAGSTER_HOME", str(old))
    run_id, version = _populate(old)
    assert all(loc.startswith(old.as_uri()) for loc in _locations(old / "mlflow.db"))

    new = tmp_path / "elsewhere" / "home"
    new.parent.mkdir()
    if how == "move":
        shutil.move(old, new)
    else:  # backup archive, the original lost, restored into a new place
        archive = shutil.make_archive(str(tmp_path / "backup"), "gztar", root_dir=old)
        shutil.rmtree(old)
        new.mkdir()
        shutil.unpack_archive(archive, new)
    assert not old.exists()
    # the naive store (no rebase) still points at the old place: this is what the hook fixes
    assert all(loc.startswith(old.as_uri()) for loc in _locations(new / "mlflow.db"))

    monkeypatch.setenv("DAGSTER_HOME", str(new))
    mlflow = MlflowTracking()
    assert mlflow.alias_version("roadwork-test", "champion") == version
    got = mlflow.download_version("roadwork-test", version, tmp_path / "download")
    assert (got / "weights.bin").read_bytes() == b"\x00\x01roadwork" * 100
    locs = _locations(new / "mlflow.db")
    assert len(locs) == 3 and all(loc.startswith(new.as_uri() + "/") for loc in locs)
    assert mlflow.client().get_run(run_id).info.artifact_uri.startswith(new.as_uri())
    # a second open is a no-op, and new runs land under the new place too
    assert mlflow_store.open_local_store(new) == 0
    with mlflow.run("relocation", "r2") as run2:
        run2.log_metrics({"mcc": 0.6})
    assert mlflow.client().get_run(run2.run_id).info.artifact_uri.startswith(new.as_uri())


def test_rebase_matches_whole_path_components(tmp_path):
    db = tmp_path / "m.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE experiments (artifact_location TEXT)")
        conn.executemany(
            "INSERT INTO experiments VALUES (?)",
            [
                ("file:///a/home/mlartifacts/1",),
                ("file:///a/home2/mlartifacts/1",),
                ("/a/home/x",),
                ("s3://bucket/a/home",),
            ],
        )
    assert mlflow_store.rebase_locations(f"sqlite:///{db}", Path("/a/home"), Path("/b/h")) == 2
    with sqlite3.connect(db) as conn:
        got = [r[0] for r in conn.execute("SELECT artifact_location FROM experiments")]
    assert got == [
        "file:///b/h/mlartifacts/1",
        "file:///a/home2/mlartifacts/1",
        "/b/h/x",
        "s3://bucket/a/home",
    ]


def test_configured_uris_are_left_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://u@127.0.0.1:5432/mlflow")
    monkeypatch.setenv(mlflow_store.ARTIFACT_ROOT_ENV, "mlflow-artifacts:/")
    assert mlflow_store.tracking_uri(tmp_path) == "postgresql://u@127.0.0.1:5432/mlflow"
    assert not mlflow_store.is_embedded(mlflow_store.tracking_uri(tmp_path), tmp_path)
    assert mlflow_store.artifact_root(tmp_path) == "mlflow-artifacts:/"
    monkeypatch.setenv(mlflow_store.ARTIFACT_ROOT_ENV, str(tmp_path / "vol"))
    assert mlflow_store.artifact_root(tmp_path) == (tmp_path / "vol").as_uri()
