"""Resources: the profile, the artifact store and the MLflow tracking store."""


import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg
from pydantic import Field

from roadwork_ml import mlflow_store
from roadwork_ml.config import Profile, load_profile


def dagster_home() -> Path:
    """$DAGSTER_HOME, or ./dagster_home when unset (the repo's embedded default)."""
    return Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()


class RunOverrides(dg.Config):
    """Per-run overrides from the launchpad: ``["train.epochs=3", "splits.fusion=balanced"]``.

    Any profile parameter can be set this way; values are parsed as YAML and validated
    against the profile schema before the asset body runs.
    """

    overrides: list[str] = Field(default_factory=list, description="dotted profile keys with values, e.g. train.epochs=3")


class ProfileResource(dg.ConfigurableResource):
    """Which profile the code location runs with. ``None`` → $ROADWORK_PROFILE, else 'demo'."""

    profile: str | None = Field(default=None, description="profile name (demo, production, tiny) or a YAML path")

    def load(self, overrides: list[str] | None = None) -> Profile:
        return load_profile(self.profile, overrides)


class ArtifactStore(dg.ConfigurableResource):
    """Local directory for large artifacts (images, checkpoints, predictions). Default: $DAGSTER_HOME/artifacts.

    Assets write a new version into a temporary sibling directory and swap it in with
    renames, so readers see either the old or the new version, never a half-written one.
    """

    root: str | None = Field(default=None, description="artifact root directory; default $DAGSTER_HOME/artifacts")

    @property
    def base(self) -> Path:
        return Path(self.root).expanduser().resolve() if self.root else dagster_home() / "artifacts"

    def path(self, *parts: str) -> Path:
        return self.base.joinpath(*parts)

    def require(self, *parts: str) -> Path:
        """Path of an artifact that an upstream asset must have written; a clear error otherwise."""
        p = self.path(*parts)
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist: materialize the upstream asset '{parts[0]}' first")
        return p

    @contextmanager
    def staging(self, *parts: str) -> Iterator[Path]:
        """Yield a fresh temporary directory; on success it atomically replaces ``path(*parts)``."""
        final = self.path(*parts)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.staging-{uuid.uuid4().hex[:8]}")
        tmp.mkdir()
        try:
            yield tmp
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)


class MlflowTracking(dg.ConfigurableResource):
    """Thin wrapper over ``mlflow.MlflowClient``. Default store: SQLite under $DAGSTER_HOME."""

    tracking_uri: str | None = Field(default=None, description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///$DAGSTER_HOME/mlflow.db")
    artifact_root: str | None = Field(default=None, description="where new experiments store artifacts; default $ROADWORK_MLFLOW_ARTIFACT_ROOT, else $DAGSTER_HOME/mlartifacts")

    def uri(self) -> str:
        return mlflow_store.tracking_uri(dagster_home(), self.tracking_uri)

    def client(self):
        from mlflow import MlflowClient

        home = dagster_home()
        home.mkdir(parents=True, exist_ok=True)
        uri = self.uri()
        if mlflow_store.is_embedded(uri, home):
            mlflow_store.open_local_store(home)  # follows the instance after a move or restore
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def experiment_id(self, name: str) -> str:
        client = self.client()
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        return client.create_experiment(name, artifact_location=mlflow_store.artifact_root(dagster_home(), self.artifact_root))

    @contextmanager
    def run(self, experiment: str, run_name: str, tags: dict[str, str] | None = None) -> Iterator["TrackedRun"]:
        """Start a run; it ends FINISHED on success and FAILED on an exception."""
        client = self.client()
        mlrun = client.create_run(self.experiment_id(experiment), run_name=run_name, tags=tags or {})
        tracked = TrackedRun(client, mlrun.info.run_id)
        try:
            yield tracked
        except BaseException:
            client.set_terminated(mlrun.info.run_id, status="FAILED")
            raise
        client.set_terminated(mlrun.info.run_id, status="FINISHED")


    # -- model registry ----------------------------------------------------------------------
    def register_version(self, model_name: str, run_id: str, artifact_path: str, tags: dict[str, str] | None = None) -> str:
        """Register ``artifact_path`` of run ``run_id`` as a new version of ``model_name``
        (created on first use); returns the version number as a string."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            client.get_registered_model(model_name)
        except MlflowException:
            client.create_registered_model(model_name, description="roadwork bundles: ONNX + safetensors + calibrator + decision policy")
        run = client.get_run(run_id)
        version = client.create_model_version(model_name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id, tags=tags or {})
        return str(version.version)

    def alias_version(self, model_name: str, alias: str) -> str | None:
        """The version an alias points at, or None (no model or no such alias)."""
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client().get_model_version_by_alias(model_name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, model_name: str, alias: str, version: str) -> None:
        self.client().set_registered_model_alias(model_name, alias, str(version))

    def delete_alias(self, model_name: str, alias: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client().delete_registered_model_alias(model_name, alias)
        except MlflowException:
            pass

    def set_version_tag(self, model_name: str, version: str, key: str, value: str) -> None:
        self.client().set_model_version_tag(model_name, str(version), key, value)

    def version_tags(self, model_name: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(model_name, str(version)).tags)

    def download_version(self, model_name: str, version: str, dst: str | Path) -> Path:
        """Copy a registered version's artifacts (the bundle) to ``dst``; returns the bundle dir."""
        client = self.client()
        mv = client.get_model_version(model_name, str(version))
        Path(dst).mkdir(parents=True, exist_ok=True)
        artifact = mv.source.rsplit("/", 1)[-1]
        return Path(client.download_artifacts(mv.run_id, artifact, str(dst)))


class TrackedRun:
    """One MLflow run: params, metrics with steps, artifacts."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id

    def log_params(self, params: dict) -> None:
        from mlflow.entities import Param

        items = [Param(str(k)[:250], str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)
