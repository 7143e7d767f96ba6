"""Resources: the run's profile, the artifact store and the MLflow tracking store."""

import fcntl
import functools
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from roadwork_ml import mlflow_store
from roadwork_ml.artifacts import MANIFEST_NAME, atomic_write_json
from roadwork_ml.config import Profile, load_profile


def dagster_home() -> Path:
    """$DAGSTER_HOME, or ./dagster_home when unset (the repo's embedded default)."""
    return Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()


# --- the profile ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResolvedProfile:
    """A profile as one run sees it: the validated tree, where it came from and its hash.

    ``sha256`` is over the canonical JSON of the resolved tree, so two runs agree on it exactly
    when every parameter agrees, however the values were reached (file, extends, overrides).
    """

    profile: Profile
    source: str
    overrides: tuple[str, ...]
    sha256: str

    def record(self) -> dict:
        """What an artifact's manifest and a run's tags carry about the profile."""
        return {
            "name": self.profile.name,
            "source": self.source,
            "overrides": list(self.overrides),
            "sha256": self.sha256,
        }

    def tags(self) -> dict[str, str]:
        return {
            "roadwork/profile": self.source,
            "roadwork/profile_sha256": self.sha256,
            "roadwork/profile_overrides": json.dumps(list(self.overrides)),
        }


def profile_sha256(profile: Profile) -> str:
    return hashlib.sha256(
        json.dumps(profile.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def resolve_profile(source: str, overrides: tuple[str, ...]) -> ResolvedProfile:
    """Load, override, validate and hash a profile. Cached per (source, overrides) until a
    profile file changes, so a long-lived sensor process sees an edited YAML on its next tick."""
    return _resolve_cached(source, tuple(overrides), _profile_files_state(source))


def _profile_files_state(source: str) -> tuple:
    from roadwork_ml.config import PROFILE_DIR

    files = [*PROFILE_DIR.glob("*.yaml"), Path(source).expanduser()]
    return tuple((str(f), f.stat().st_mtime_ns) for f in files if f.is_file())


@functools.lru_cache(maxsize=32)
def _resolve_cached(source: str, overrides: tuple[str, ...], _files_state: tuple) -> ResolvedProfile:
    profile = load_profile(source, list(overrides))
    return ResolvedProfile(profile, source, overrides, profile_sha256(profile))


def profile_source(profile: str | None) -> str:
    """The profile name or path a code location runs with: the argument, else $ROADWORK_PROFILE
    at the time of the call, else 'demo'. Read when definitions load, never at import."""
    return profile or os.environ.get("ROADWORK_PROFILE") or "demo"


class ProfileResource(dg.ConfigurableResource):
    """The one profile every asset, check and sensor of a run resolves.

    Set per run at launch (launchpad ``resources: settings: config: overrides: [...]``); the
    asset bodies and the checks of that run then judge against the same parameters. A
    sensor-launched run carries the profile its decision was made under the same way.
    """

    profile: str | None = Field(
        default=None,
        description="profile name (demo, production, tiny) or a YAML path; None = $ROADWORK_PROFILE, else demo",
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="dotted profile keys with values for this run, e.g. train.epochs=3 or splits.class_share_tolerance=0.1",
    )

    def resolved(self) -> ResolvedProfile:
        return resolve_profile(profile_source(self.profile), tuple(self.overrides))

    def load(self) -> Profile:
        return self.resolved().profile

    @classmethod
    def bound(cls, profile: str, overrides: list[str] | None = None) -> "ProfileResource":
        """An instance whose *launch config default* is ``profile``. Dagster builds a run's
        resource from the launch config alone, so a launch that sets only ``overrides`` falls
        back to the class's default ``profile``; this subclass makes that default ``profile``."""
        return _bound_class(profile)(overrides=list(overrides or []))


@functools.cache
def _bound_class(profile: str) -> type[ProfileResource]:
    field = Field(default=profile, description="profile name (demo, production, tiny) or a YAML path")
    return type(
        "ProfileResource",
        (ProfileResource,),
        {"__annotations__": {"profile": str | None}, "profile": field, "__doc__": ProfileResource.__doc__},
    )


# --- the artifact store -----------------------------------------------------------------------

VERSIONS = ".versions"
_READ_LOCKS: dict[Path, tuple[str, int]] = {}  # pointer path -> (version it holds, fd of its shared lock)


class ArtifactStore(dg.ConfigurableResource):
    """Local directory for large artifacts. Default: $DAGSTER_HOME/artifacts.

    Layout: an asset's artifact lives at ``<root>/<asset key>[/<partition>]`` (:meth:`location`,
    the one place that derives it). That path is a symlink to an immutable version directory
    ``<root>/.versions/<asset key>[/<partition>]/<version>``; a writer fills a new version and
    swaps the symlink with one ``os.replace``, so a reader always finds a complete version, the
    old or the new one. Readers go through :meth:`read`, which holds a shared lock on the version
    it resolved (until the same process reads that artifact again); old versions are deleted
    only when no reader holds them. ``read_log`` (tests) appends every read to a JSON-lines file.
    """

    root: str | None = Field(default=None, description="artifact root directory; default $DAGSTER_HOME/artifacts")
    read_log: str | None = Field(
        default=None, description="append every artifact read here as JSON lines (used by the declared-I/O test)"
    )
    keep_versions: int = Field(
        default=2,
        ge=1,
        description="newest versions kept per artifact (current included) when nobody reads the older ones",
    )

    @property
    def base(self) -> Path:
        return Path(self.root).expanduser().resolve() if self.root else dagster_home() / "artifacts"

    def path(self, *parts: str) -> Path:
        """A plain path under the root, for files that are not asset artifacts (the audit record)."""
        return self.base.joinpath(*parts)

    def location(self, key: str, partition: str | None = None) -> Path:
        """Where the artifact of asset ``key`` (and ``partition``) is found: a stable path."""
        return self.base.joinpath(key, *([partition] if partition is not None else []))

    def _versions(self, key: str, partition: str | None) -> Path:
        return self.base.joinpath(VERSIONS, key, *([partition] if partition is not None else []))

    def exists(self, key: str, partition: str | None = None) -> bool:
        return self.location(key, partition).exists()

    def partitions(self, key: str) -> list[str]:
        d = self.base / key
        return sorted(p.name for p in d.iterdir() if not p.name.startswith(".") and p.exists()) if d.is_dir() else []

    def log_read(self, key: str, partition: str | None = None, split: str | None = None) -> None:
        if self.read_log:
            entry = {"key": key, "partition": partition, "split": split, "pid": os.getpid()}
            with open(self.read_log, "a", encoding="utf-8") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                fh.write(json.dumps(entry) + "\n")

    def read(self, key: str, partition: str | None = None, *, split: str | None = None) -> Path:
        """The current version directory of an artifact an upstream asset must have written.

        A clear error names the asset (and partition) when it was never materialized. The
        version stays readable (not garbage-collected) while this process holds it.
        """
        self.log_read(key, partition, split)
        pointer = self.location(key, partition)
        what = f"asset '{key}'" + (f" partition '{partition}'" if partition is not None else "")
        for _ in range(20):  # a concurrent writer can swap (and GC) between resolve and lock: retry
            if not pointer.exists():
                raise FileNotFoundError(f"{pointer} does not exist: materialize {what} first")
            if not pointer.is_symlink():  # written before versioned storage: a plain directory
                return pointer
            target = pointer.resolve()
            held = _READ_LOCKS.get(pointer)
            if held is not None and held[0] == target.name and target.is_dir():
                return target
            try:
                fd = os.open(target.parent / f"{target.name}.lock", os.O_RDONLY)
            except FileNotFoundError:
                continue
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not target.is_dir():
                os.close(fd)
                continue
            if held is not None:
                os.close(held[1])
            _READ_LOCKS[pointer] = (target.name, fd)
            return target
        raise RuntimeError(f"{what} kept changing while being read: is a writer looping?")

    @contextmanager
    def staging(self, key: str, partition: str | None = None, *, profile: ResolvedProfile) -> Iterator[Path]:
        """Yield a fresh version directory; on success it becomes the artifact in one atomic step.

        The profile the version was built under is added to its ``MANIFEST.json`` (when the
        writer wrote one) and to the version record ``<version>.json`` beside it.
        """
        pointer = self.location(key, partition)
        vroot = self._versions(key, partition)
        vroot.mkdir(parents=True, exist_ok=True)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        vid = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        lock_fd = os.open(vroot / f"{vid}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(lock_fd, fcntl.LOCK_EX)  # GC skips a version whose writer is alive
        vdir = vroot / vid
        vdir.mkdir()
        try:
            yield vdir
            manifest = vdir / MANIFEST_NAME
            if manifest.is_file():
                atomic_write_json(manifest, {**json.loads(manifest.read_text()), "profile": profile.record()})
            atomic_write_json(
                vroot / f"{vid}.json",
                {
                    "asset_key": key,
                    "partition": partition,
                    "version": vid,
                    "profile": {**profile.record(), "resolved": profile.profile.model_dump(mode="json")},
                },
            )
            if pointer.exists() and not pointer.is_symlink():  # one-time move of a pre-versioning directory
                legacy = f"{time.time_ns() - 1:020d}-legacy"
                os.replace(pointer, vroot / legacy)
                atomic_write_json(
                    vroot / f"{legacy}.json",
                    {"asset_key": key, "partition": partition, "version": legacy, "profile": None},
                )
            link = pointer.with_name(f".{pointer.name}.ptr-{uuid.uuid4().hex[:8]}")
            os.symlink(os.path.relpath(vdir, pointer.parent), link)
            os.replace(link, pointer)  # the swap: one rename
            dir_fd = os.open(pointer.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except BaseException:
            shutil.rmtree(vdir, ignore_errors=True)
            (vroot / f"{vid}.json").unlink(missing_ok=True)
            (vroot / f"{vid}.lock").unlink(missing_ok=True)
            os.close(lock_fd)
            raise
        os.close(lock_fd)
        self.collect_garbage(key, partition)

    def collect_garbage(self, key: str, partition: str | None = None) -> list[str]:
        """Delete versions older than the newest ``keep_versions`` that no reader or writer
        holds, and leftovers of crashed writers; the current version is never deleted."""
        vroot = self._versions(key, partition)
        pointer = self.location(key, partition)
        current = pointer.resolve().name if pointer.is_symlink() else None
        names = (
            sorted({p.name.split(".")[0] for p in vroot.iterdir() if not p.name.startswith(".")})
            if vroot.is_dir()
            else []
        )
        complete = [n for n in names if (vroot / f"{n}.json").exists()]  # a crashed writer leaves none
        keep = set(complete[-self.keep_versions :]) | {current}
        deleted = []
        for name in names:
            if name in keep:
                continue
            lock = vroot / f"{name}.lock"
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a reader holds it, or its writer is still writing
                os.close(fd)
                continue
            shutil.rmtree(vroot / name, ignore_errors=True)
            (vroot / f"{name}.json").unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            os.close(fd)
            deleted.append(name)
        for link in pointer.parent.glob(f".{pointer.name}.ptr-*"):  # a writer killed between link and swap
            if time.time() - link.lstat().st_mtime > 60:
                link.unlink(missing_ok=True)
        return deleted


# --- MLflow -----------------------------------------------------------------------------------


class MlflowTracking(dg.ConfigurableResource):
    """Thin wrapper over ``mlflow.MlflowClient``. Default store: SQLite under $DAGSTER_HOME."""

    tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking URI; default $MLFLOW_TRACKING_URI, else sqlite:///$DAGSTER_HOME/mlflow.db",
    )
    artifact_root: str | None = Field(
        default=None,
        description="where new experiments store artifacts; default $ROADWORK_MLFLOW_ARTIFACT_ROOT, else $DAGSTER_HOME/mlartifacts",
    )

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
        return client.create_experiment(
            name, artifact_location=mlflow_store.artifact_root(dagster_home(), self.artifact_root)
        )

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
    def register_version(
        self, model_name: str, run_id: str, artifact_path: str, tags: dict[str, str] | None = None
    ) -> str:
        """Register ``artifact_path`` of run ``run_id`` as a new version of ``model_name``
        (created on first use); returns the version number as a string."""
        from mlflow.exceptions import MlflowException

        client = self.client()
        try:
            client.get_registered_model(model_name)
        except MlflowException:
            client.create_registered_model(
                model_name, description="roadwork bundles: ONNX + safetensors + calibrator + decision policy"
            )
        run = client.get_run(run_id)
        version = client.create_model_version(
            model_name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id, tags=tags or {}
        )
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

        with suppress(MlflowException):
            self.client().delete_registered_model_alias(model_name, alias)

    def set_version_tag(self, model_name: str, version: str, key: str, value: str) -> None:
        self.client().set_model_version_tag(model_name, str(version), key, value)

    def version_tags(self, model_name: str, version: str) -> dict[str, str]:
        return dict(self.client().get_model_version(model_name, str(version)).tags)

    def find_version(self, model_name: str, tag: str, value: str) -> str | None:
        """The version of ``model_name`` whose tag ``tag`` equals ``value``, or None."""
        from mlflow.exceptions import MlflowException

        try:
            versions = self.client().search_model_versions(f"name='{model_name}'")
        except MlflowException:
            return None
        return next((str(v.version) for v in versions if v.tags.get(tag) == value), None)

    def versions(self, model_name: str) -> dict[str, dict[str, str]]:
        """Every registered version of ``model_name`` → its tags (empty when the model does not exist)."""
        from mlflow.exceptions import MlflowException

        try:
            found = self.client().search_model_versions(f"name='{model_name}'")
        except MlflowException:
            return {}
        return {str(v.version): dict(v.tags) for v in found}

    def version_metric(self, model_name: str, version: str, key: str) -> float | None:
        """The metric ``key`` the run that registered ``version`` logged (what MLflow's UI shows
        for that version), or None."""
        from mlflow.exceptions import MlflowException

        try:
            client = self.client()
            return client.get_run(client.get_model_version(model_name, str(version)).run_id).data.metrics.get(key)
        except MlflowException:
            return None

    def identity(self, model_name: str, content_hash: str) -> dict:
        """The model with bundle manifest sha256 ``content_hash`` as the registry knows it now:
        ``identity`` (roadwork_ml.export.identity.ModelIdentity) and ``status`` (model_status)."""
        from roadwork_ml.evaluation.champion import TAG_ROLLED_BACK
        from roadwork_ml.export.identity import ModelIdentity, model_status

        version = self.find_version(model_name, "roadwork.bundle_manifest_sha256", content_hash)
        ident = ModelIdentity(content_hash, model_name if version else None, version)
        status = model_status(
            version,
            champion=self.alias_version(model_name, "champion"),
            challenger=self.alias_version(model_name, "challenger"),
            previous_champion=self.alias_version(model_name, "previous_champion"),
            rolled_back=bool(version) and self.version_tags(model_name, version).get(TAG_ROLLED_BACK) == "true",
        )
        return {"identity": ident, "status": status}

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
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(directory), artifact_path)
