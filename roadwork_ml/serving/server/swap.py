"""Where the champion comes from, and hot swaps when it moves.

Sources: the MLflow registry alias (``champion`` of ``deploy.registered_model``, what
``deployed_model`` moves on promotion and rollback), a bundle directory watched for a new
``manifest.json``, or a fixed bundle. A new champion is copied into the server's cache,
loaded (every hash verified), checked against the registry's manifest hash tag, warmed up
and then swapped in with one reference assignment: a batch already running keeps the model
it started with, so in-flight requests finish on the old one. A candidate that fails to load
is logged and skipped until the source moves again; the old model keeps serving.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from roadwork_ml.artifacts import IntegrityError, sha256_file
from roadwork_ml.export.bundle import MANIFEST

log = logging.getLogger("roadwork.serve")

TAG_MANIFEST = "roadwork.bundle_manifest_sha256"  # set on each registered version by deployed_model


@dataclass(frozen=True)
class Candidate:
    """A champion to load: ``key`` identifies it at the source (changes when it moves)."""

    key: str
    version: str  # the protocol's model version
    log_version: str  # the inference log's model_version
    expected_manifest_sha256: str | None = None


class ChampionSource(Protocol):
    def current(self) -> Candidate | None: ...

    def fetch(self, candidate: Candidate, into: Path) -> Path: ...


class FixedBundle:
    """``--bundle DIR``: that bundle (``watch``: reloaded whenever its manifest changes)."""

    def __init__(self, path: str | Path, watch: bool = False):
        self.path = Path(path)
        self.watch = watch
        self._first: Candidate | None = None

    def current(self) -> Candidate | None:
        if self._first is not None and not self.watch:
            return self._first
        manifest = self.path / MANIFEST
        if not manifest.is_file():
            if self._first is None:
                raise FileNotFoundError(f"{self.path} is not a roadwork bundle: {MANIFEST} is missing")
            return None  # mid-replacement: keep serving
        from roadwork_ml.export.identity import bundle_identity

        # the same model id the CLI and the inference log use (registry name/version, else sha256:<manifest>)
        tag = bundle_identity(self.path).tag
        cand = Candidate(key=sha256_file(manifest), version=tag, log_version=tag)
        self._first = self._first or cand
        return cand

    def fetch(self, candidate: Candidate, into: Path) -> Path:
        shutil.copytree(self.path, into)
        if sha256_file(into / MANIFEST) != candidate.key:
            raise IntegrityError(f"{self.path} changed while it was copied; retrying at the next poll")
        return into


class RegistryChampion:
    """The MLflow registry's ``alias`` of ``model_name`` (the store ``deployed_model`` writes)."""

    def __init__(self, tracking_uri: str, model_name: str, alias: str = "champion"):
        self.tracking_uri, self.model_name, self.alias = tracking_uri, model_name, alias

    def _client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def current(self) -> Candidate | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client().get_model_version_by_alias(self.model_name, self.alias)
        except MlflowException:
            return None
        v = str(mv.version)
        return Candidate(
            key=f"{v}:{mv.run_id}",
            version=v,
            log_version=f"{self.model_name}/{v}",
            expected_manifest_sha256=(mv.tags or {}).get(TAG_MANIFEST),
        )

    def fetch(self, candidate: Candidate, into: Path) -> Path:
        client = self._client()
        mv = client.get_model_version(self.model_name, candidate.version)
        artifact = mv.source.rstrip("/").rsplit("/", 1)[-1]
        into.mkdir(parents=True)
        return Path(client.download_artifacts(mv.run_id, artifact, str(into)))


class ModelHolder:
    """The current :class:`~roadwork_ml.serving.server.model.ServedModel`; swapped by one assignment."""

    def __init__(
        self,
        source: ChampionSource,
        load: Callable[[Path, Candidate], object],
        cache_dir: str | Path,
        on_swap: Callable[[object, object | None], None] | None = None,
        on_failure: Callable[[Candidate, str], None] | None = None,
    ):
        self.source, self._load = source, load
        self.cache = Path(cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.on_swap, self.on_failure = on_swap, on_failure
        self.model = None
        self._key: str | None = None
        self._dir: Path | None = None
        self._failed: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def _materialize(self, cand: Candidate):
        target = self.cache / f"v{cand.version[:24]}-{uuid.uuid4().hex[:8]}"
        try:
            bundle = self.source.fetch(cand, target)
            got = sha256_file(bundle / MANIFEST)
            if cand.expected_manifest_sha256 and got != cand.expected_manifest_sha256:
                raise IntegrityError(
                    f"registry version {cand.version}: manifest sha256 {got[:12]} != the registered {cand.expected_manifest_sha256[:12]}"
                )
            return self._load(bundle, cand), target
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def load_initial(self) -> None:
        cand = self.source.current()
        if cand is None:
            raise FileNotFoundError(
                f"no champion to serve: {getattr(self.source, 'alias', 'the source')} of {getattr(self.source, 'model_name', '')} is not set"
            )
        self.model, self._dir = self._materialize(cand)
        self._key = cand.key
        if self.on_swap:
            self.on_swap(self.model, None)

    def check_once(self) -> bool:
        """Swap to the source's champion if it moved; True when a swap happened."""
        with self._lock:
            cand = self.source.current()
            if cand is None or cand.key == self._key or cand.key in self._failed:
                return False
            log.info("champion moved to %s: loading", cand.log_version)
            try:
                model, directory = self._materialize(cand)
            except Exception as exc:  # noqa: BLE001 - a bad candidate never takes the server down
                self._failed.add(cand.key)
                reason = f"{type(exc).__name__}: {exc}"
                log.error(
                    "champion %s refused, still serving %s: %s",
                    cand.log_version,
                    getattr(self.model, "log_version", None),
                    reason,
                )
                if self.on_failure:
                    self.on_failure(cand, reason)
                return False
            old, old_dir = self.model, self._dir
            self.model, self._dir, self._key = model, directory, cand.key  # the swap
            log.info(
                "now serving %s (was %s)",
                cand.log_version,
                getattr(old, "log_version", None),
            )
            if self.on_swap:
                self.on_swap(model, old)
            if old_dir is not None:
                shutil.rmtree(old_dir, ignore_errors=True)  # the old model's sessions hold what they need in memory
            return True

    def start_watching(self, every_s: float) -> None:
        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.check_once()
                except Exception:
                    log.exception("champion check failed; retrying in %.1f s", every_s)

        self._thread = threading.Thread(target=loop, name="roadwork-champion-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
