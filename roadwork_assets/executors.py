"""Which executor the retrain job runs its steps with: in this process (default), or one
Kubernetes pod per step when the code location runs on Kubernetes (``ROADWORK_EXECUTOR=k8s``,
set by ``deploy/k8s``). Step pods default to the CPU size; the GPU steps override it with their
``dagster-k8s/config`` op tags (``roadwork_assets.run_tags``)."""

import os

import dagster as dg

from roadwork_assets.run_tags import k8s_step_config


def retrain_executor() -> dg.ExecutorDefinition | None:
    """``k8s_job_executor`` with CPU-sized step pods when ``ROADWORK_EXECUTOR=k8s``, else None
    (the job uses the code location's default executor)."""
    kind = os.environ.get("ROADWORK_EXECUTOR", "").strip().lower()
    if kind in ("", "default", "in_process"):
        return None
    if kind != "k8s":
        raise ValueError(f"ROADWORK_EXECUTOR={kind!r}: expected 'k8s' or unset")
    from dagster_k8s import k8s_job_executor

    cpu = k8s_step_config(gpu=False)
    return k8s_job_executor.configured(
        {
            "max_concurrent": 4,
            "step_k8s_config": {"container_config": cpu["container_config"]},
        },
        name="roadwork_k8s_job_executor",
    )
