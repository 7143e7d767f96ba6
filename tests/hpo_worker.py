"""Subprocess for tests/test_hpo.py: a small Optuna study on a tiny ViT (tiny profile layout).

Usage: python tests/hpo_worker.py STORAGE_URL N_TRIALS
"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import _cfgs, _data

from roadwork_ml.config import HpoConfig, HpoParam
from roadwork_ml.models import build_classifier
from roadwork_ml.training.hpo import build_study, phase1_objective, run_study
from roadwork_ml.training.trainer import train_classifier


def main(url: str, n_trials: int) -> None:
    torch.set_num_threads(1)
    mcfg, base = _cfgs(epochs=3, batch_size=32)
    train, val = _data(96, 0, "train"), _data(64, 1, "val_select")
    cfg = HpoConfig(
        n_trials=n_trials,
        seed=0,
        pruner="median",
        n_startup_trials=2,
        n_warmup_epochs=1,
        heartbeat_s=1,
        search_space=[
            HpoParam(key="lr", kind="float", low=1e-4, high=1e-2, log=True),
            HpoParam(key="optimizer.name", kind="categorical", choices=["adamw", "sgd"]),
        ],
    )

    def train_fn(tcfg, report):
        torch.manual_seed(0)
        model = build_classifier(mcfg)

        def on_epoch(s):
            time.sleep(0.4)  # long enough that the test's kill lands inside a trial
            report(s.epoch, s.val_mcc)

        return train_classifier(model, train, val, tcfg, on_epoch=on_epoch, progress=False, log=lambda s: None).best_mcc

    study = build_study(url, cfg, max_epochs=base.epochs)
    run_study(study, phase1_objective(train_fn, base, cfg.search_space), cfg)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
