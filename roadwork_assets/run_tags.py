"""Run and op tags that the deployment configuration (``deploy/``) keys on.

The QueuedRunCoordinator in ``deploy/dagster.yaml`` limits runs by tag: at most one run tagged
``RUN_CLASS_TAG: TRAINING`` at a time, at most one run per ``dagster/partition`` value (one drift
run per day). Run retries are opted into per job with ``dagster/max_retries``. On Kubernetes the
``dagster-k8s/config`` op tags give the GPU steps (training, ExPLoRA, TensorRT) a GPU, a node
selector and a toleration, and every other step a CPU-sized pod. Names here are the contract
between the code location and the YAML under ``deploy/``; ``tests/test_deploy_static.py`` checks
that both sides agree.
"""

from typing import Any

RUN_CLASS_TAG = "roadwork/run-class"
TRAINING = "training"
PARTITION_TAG = "dagster/partition"  # set by Dagster on every partitioned run
MAX_RETRIES_TAG = "dagster/max_retries"
MAX_RUNTIME_TAG = "dagster/max_runtime"  # seconds; run monitoring fails a STARTED run older than this

TRAINING_RUN_TAGS: dict[str, str] = {RUN_CLASS_TAG: TRAINING}
# Drift and rollback runs are idempotent (each replaces its artifact whole), so a crashed run
# worker is simply retried; training is not retried automatically (it is long and GPU-bound).
RETRY_RUN_TAGS: dict[str, str] = {MAX_RETRIES_TAG: "2"}
# A drift day takes minutes; a run still STARTED after an hour lost its worker (the local
# DefaultRunLauncher cannot probe worker health, so this is the bound there).
DRIFT_RUN_TAGS: dict[str, str] = {**RETRY_RUN_TAGS, MAX_RUNTIME_TAG: "3600"}
ROLLBACK_RUN_TAGS: dict[str, str] = {**RETRY_RUN_TAGS, MAX_RUNTIME_TAG: "1800"}

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_NODE_SELECTOR = {"roadwork.io/pool": "gpu"}
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def k8s_step_config(gpu: bool) -> dict[str, Any]:
    """``dagster-k8s/config`` for one step pod: 1 GPU + 8 CPU / 32 GiB on the GPU pool, or
    1 CPU / 4 GiB (limits 2 CPU / 8 GiB) anywhere."""
    if gpu:
        return {
            "container_config": {
                "resources": {
                    "requests": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
                    "limits": {"memory": "48Gi", "nvidia.com/gpu": "1"},
                }
            },
            "pod_spec_config": {
                "node_selector": dict(GPU_NODE_SELECTOR),
                "tolerations": [dict(GPU_TOLERATION)],
            },
        }
    return {
        "container_config": {
            "resources": {
                "requests": {"cpu": "1", "memory": "4Gi"},
                "limits": {"cpu": "2", "memory": "8Gi"},
            }
        }
    }


GPU_OP_TAGS: dict[str, Any] = {K8S_CONFIG_TAG: k8s_step_config(gpu=True)}
CPU_OP_TAGS: dict[str, Any] = {K8S_CONFIG_TAG: k8s_step_config(gpu=False)}
# Steps that get GPU_OP_TAGS on Kubernetes; every other step runs with CPU_OP_TAGS.
GPU_ASSETS = ("phase1_checkpoint", "explora_checkpoint", "tensorrt_engine")
