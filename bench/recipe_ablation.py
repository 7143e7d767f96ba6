"""Recipe ablation (issue 11, item 6): today's phase-1 recipe vs each single change, on a
profile's own splits, compared on the same VAL_SELECT images by a paired bootstrap.

Variants (profile overrides on top of the profile; the same seeds for all):

    baseline        today's recipe
    validator_aug   train.augmentation.policy=validator (StreetVision levels 0-3 in training)
    balance         train.sampler.kind=class_source (class x source sampler, 50 % positives)
    focal           train.loss.name=focal
    hard_negatives  loss weights of the mined TRAIN false positives (the hard_negatives asset's
                    library functions: out-of-fold scores, mine_hard_negatives)
    ema             train.ema.enabled=true
    hpo_best        an Optuna study with the project's hpo code (roadwork_ml.training.hpo) at
                    --hpo-epochs epochs for --hpo-trials trials; the best parameters at full epochs
    combo           the union of the overrides of --combo-of (e.g. the changes that helped)

Each model is scored on VAL_SELECT (never VAL_TEST) through the served view path (global view
plus the profile's flip TTA, P(roadwork) > 0.5): MCC on the stored images, and the StreetVision
emulation (roadwork_ml.evaluation.streetvision: 224 px, levels 0-3, JPEG q75) per-level MCC,
the level-0 minus level-3 MCC gap and the pooled reward. Every variant is compared with the
baseline of the same seed by a paired bootstrap over images (95 % percentile intervals of the
difference). Each trained variant is cached (predictions + timings), so a re-run only trains
what is missing; ``--report-only`` just rebuilds the table and JSON from the cache.

    DAGSTER_HOME=/work/ablation_home ROADWORK_PROFILE=demo \\
      python bench/recipe_ablation.py --seeds 42 --hpo-trials 6 --hpo-epochs 4 \\
        --out bench/results/recipe_ablation_demo.json

The store must hold ``splits`` and ``source_images`` of the profile (a finished ``make demo``
home, copied: nothing is written into the store; the cache goes under --cache-dir).
Training runs on --threads CPU threads (default 1) with the DataLoader in-process.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SINGLE_CHANGES = {
    "baseline": [],
    "validator_aug": ["train.augmentation.policy=validator"],
    "balance": ["train.sampler.kind=class_source"],
    "focal": ["train.loss.name=focal"],
    "hard_negatives": ["hard_negatives.use_in_training=true"],
    "ema": ["train.ema.enabled=true"],
    "hpo_best": [],  # the study's best parameters, applied to the train section
}
ALL = [*SINGLE_CHANGES, "combo"]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


EXTRA: list[str] = []  # --set: overrides under every variant (smoke runs: train.epochs=1)


def load(profile_name: str, overrides: list[str], threads: int):
    from roadwork_ml.config import load_profile

    base = [f"train.num_threads={threads}", "data.loader.num_workers=0", "data.loader.persistent_workers=false"]
    return load_profile(profile_name, [*base, *EXTRA, *overrides])


class Bench:
    def __init__(self, args):
        from roadwork_assets.data import load_split_rows, load_split_tensors
        from roadwork_assets.recipe import phase1_datasets
        from roadwork_assets.resources import ArtifactStore
        from roadwork_ml.contracts import Split

        self.args = args
        self.cache = Path(args.cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.store = ArtifactStore(root=str(Path(args.home) / "artifacts"))
        self.profile = load(args.profile, [], args.threads)
        self.train_rows, self.train, self.val_rows, self.val = phase1_datasets(self.store, self.profile)
        p = self.profile
        native_size = max(p.inference.input_size, p.evaluation.streetvision.size)
        rows = load_split_rows(self.store, Split.VAL_SELECT)
        self.native = load_split_tensors(self.store, rows, Split.VAL_SELECT, native_size)
        self.y = self.native.labels.numpy()
        _log(f"TRAIN {len(self.train)}, VAL_SELECT {len(self.y)} images ({self.y.mean():.1%} positive)")

    # ------------------------------------------------------------------ training
    def _train(self, profile, train_cfg, weights=None, on_epoch=None):
        from roadwork_assets.recipe import photo_styles
        from roadwork_ml.training.phase1 import train_phase1

        torch.set_num_threads(self.args.threads)
        return train_phase1(
            profile.model,
            train_cfg,
            self.train,
            self.val,
            loader=profile.data.loader,
            sample_weights=weights,
            styles=photo_styles(profile),
            on_epoch=on_epoch,
            log=_log,
            progress=False,
        )

    def hard_negative_weights(self) -> tuple[np.ndarray, dict]:
        """The hard_negatives asset's computation (out-of-fold TRAIN scores with the profile's
        recipe, then mine_hard_negatives), cached; weights [N TRAIN]."""
        from roadwork_ml.training.hard_negatives import (
            false_positive_rate,
            hard_negative_slice,
            mine_hard_negatives,
            out_of_fold_scores,
        )
        from roadwork_ml.training.trainer import predict_dataset

        path = self.cache / "hard_negatives.npz"
        meta_path = self.cache / "hard_negatives.json"
        if path.exists():
            return np.load(path)["weights"], json.loads(meta_path.read_text())
        p = self.profile
        hn = p.hard_negatives
        fold_cfg = p.train.model_copy(update={"epochs": self.args.hn_epochs or hn.epochs or p.train.epochs})
        t0 = time.perf_counter()

        def fit_predict(fit_idx, score_idx):
            _log(f"hard negatives: fold model on {len(fit_idx)} rows, scoring {len(score_idx)}")
            run = train_phase1_subset(self, p, fold_cfg, fit_idx)
            logits = predict_dataset(run.model, self.train.subset(score_idx), p.inference.batch_size, p.data.loader)
            return torch.softmax(logits, 1)[:, 1].numpy()

        labels = self.train_rows["label"].to_numpy()
        scores = out_of_fold_scores(
            fit_predict, labels, self.train_rows["group_id"].to_numpy(), hn.n_folds, p.train.seed
        )
        mined = mine_hard_negatives(scores, labels, hn.min_score, hn.max_fraction, hn.weight)
        in_slice = hard_negative_slice(self.train_rows["tags"].tolist())
        meta = {
            "n_folds": hn.n_folds,
            "fold_epochs": fold_cfg.epochs,
            "mined": len(mined.indices),
            "weight": hn.weight,
            "min_score": hn.min_score,
            "max_fraction": hn.max_fraction,
            "oof_fpr_hard_negative_slice": false_positive_rate(scores, labels, in_slice, hn.min_score),
            "oof_fpr_all_negatives": false_positive_rate(scores, labels, None, hn.min_score),
            "seconds": time.perf_counter() - t0,
        }
        np.savez(path, weights=mined.weights, scores=scores)
        meta_path.write_text(json.dumps(meta, indent=2))
        _log(f"hard negatives: {meta}")
        return mined.weights, meta

    def hpo_best(self) -> dict:
        """A small Optuna study (roadwork_ml.training.hpo) at reduced epochs; cached best params."""
        import optuna

        from roadwork_ml.training.hpo import build_study, phase1_objective, run_study

        a, p = self.args, self.profile
        name = f"ablation_{p.name}_e{a.hpo_epochs}"
        out = self.cache / f"hpo_{name}.json"
        hpo_cfg = p.hpo.model_copy(update={"n_trials": a.hpo_trials, "study_name": name})
        base = p.train.model_copy(update={"epochs": a.hpo_epochs})
        study = build_study(f"sqlite:///{self.cache / 'hpo.db'}", hpo_cfg, base.epochs)
        t0 = time.perf_counter()

        def train_fn(cfg, report) -> float:
            def on_epoch(s) -> None:
                report(s.epoch, s.val_mcc)

            return self._train(p, cfg, on_epoch=on_epoch).result.best_mcc

        run_study(study, phase1_objective(train_fn, base, hpo_cfg.search_space), hpo_cfg)
        trials = [
            {"number": t.number, "state": t.state.name, "value": t.value, **t.params}
            for t in study.trials
            if t.state != optuna.trial.TrialState.RUNNING
        ]
        prev = json.loads(out.read_text()) if out.exists() else {"seconds": 0.0}
        res = {
            "study_name": name,
            "trial_epochs": a.hpo_epochs,
            "n_trials": len(trials),
            "complete": sum(t["state"] == "COMPLETE" for t in trials),
            "pruned": sum(t["state"] == "PRUNED" for t in trials),
            "best_trial": study.best_trial.number,
            "best_value": study.best_value,
            "best_params": study.best_params,
            "trials": trials,
            "seconds": prev["seconds"] + time.perf_counter() - t0,
        }
        out.write_text(json.dumps(res, indent=2))
        _log(f"hpo: best trial {res['best_trial']} VAL_SELECT MCC {res['best_value']:.4f} {res['best_params']}")
        return res

    def uses_hpo(self, variant: str) -> bool:
        return variant == "hpo_best" or (variant == "combo" and "hpo_best" in self.args.combo_of.split(","))

    def overrides(self, variant: str) -> list[str]:
        """Profile overrides of a variant (hpo_best's parameters are applied to the train section apart)."""
        if variant == "combo":
            if not self.args.combo_of:
                raise SystemExit("combo needs --combo-of")
            return [o for v in self.args.combo_of.split(",") for o in self.overrides(v)]
        return list(SINGLE_CHANGES[variant])

    # ------------------------------------------------------------------ evaluation
    def predict_fn(self, model, profile):
        """uint8 [B, 3, H, W] at the StreetVision size -> P(roadwork) [B], as the evaluation
        asset serves it: resized to inference.input_size, global view (+ flip TTA), mean."""
        from roadwork_ml.data.transforms import to_float
        from roadwork_ml.evaluation.report import resize_images
        from roadwork_ml.models.inference import multiview_model

        mv = multiview_model(
            model, profile.model, profile.inference, choice={"multi_view": False, "aggregator": "mean", "top_k": 1}
        )

        @torch.no_grad()
        def fn(batch: torch.Tensor) -> np.ndarray:
            out = []
            for s in range(0, batch.shape[0], profile.inference.batch_size):
                x = to_float(resize_images(batch[s : s + profile.inference.batch_size], profile.inference.input_size))
                out.append(mv(x)[0].exp()[:, 1])
            return torch.cat(out).double().numpy()

        return fn

    def run_variant(self, variant: str, seed: int) -> dict:
        from roadwork_ml.evaluation.streetvision import streetvision_eval
        from roadwork_ml.training.hpo import apply_params

        key = f"{variant}_s{seed}"
        meta_path, npz_path = self.cache / f"{key}.json", self.cache / f"{key}.npz"
        if meta_path.exists() and npz_path.exists():
            return json.loads(meta_path.read_text())
        overrides = self.overrides(variant)
        hpo_params = self.hpo_best()["best_params"] if self.uses_hpo(variant) else None
        profile = load(self.args.profile, [*overrides, f"train.seed={seed}"], self.args.threads)
        train_cfg = apply_params(profile.train, hpo_params) if hpo_params else profile.train
        weights, hn_meta = (None, None)
        if profile.hard_negatives.use_in_training:
            weights, hn_meta = self.hard_negative_weights()
        _log(f"{key}: training with {overrides}")
        t0 = time.perf_counter()
        run = self._train(profile, train_cfg, weights)
        wall = time.perf_counter() - t0
        model = run.model.cpu().eval()
        t1 = time.perf_counter()
        fn = self.predict_fn(model, profile)
        p_val = fn(self.native.images)
        sv = streetvision_eval(
            fn,
            self.native.images,
            self.y,
            levels=profile.evaluation.streetvision.levels,
            seed=profile.evaluation.streetvision.seed,
            batch_size=profile.inference.batch_size,
            n_resamples=self.args.n_resamples,
            n_jobs=1,
            return_outputs=True,
        )
        outputs = sv.pop("outputs")
        r = run.result
        meta = {
            "variant": variant,
            "seed": seed,
            "overrides": overrides,
            "hpo_params": hpo_params,
            "hard_negatives": hn_meta,
            "train_wall_seconds": wall,
            "train_epoch_seconds": float(sum(h.seconds for h in r.history)),
            "epochs_run": len(r.history),
            "best_epoch": r.best_epoch,
            "best_is_ema": r.best_is_ema,
            "best_val_select_mcc_during_training": r.best_mcc,
            "eval_seconds": time.perf_counter() - t1,
            "streetvision": {
                k: (
                    {kk: (vv.to_dict() if hasattr(vv, "to_dict") else vv) for kk, vv in v.items()}
                    if isinstance(v, dict)
                    else v
                )
                for k, v in sv.items()
            },
        }
        np.savez(npz_path, p_val=p_val, **{f"level_{lv}": o for lv, o in outputs.items()})
        meta_path.write_text(json.dumps(meta, indent=2))
        _log(
            f"{key}: train {wall:.0f}s ({len(r.history)} epochs, best {r.best_epoch}), "
            f"VAL_SELECT MCC {r.best_mcc:.4f}, pooled reward {sv['pooled']['reward'].estimate:.4f}"
        )
        return meta


def train_phase1_subset(bench: Bench, profile, cfg, fit_idx):
    from roadwork_assets.recipe import photo_styles
    from roadwork_ml.training.phase1 import train_phase1

    return train_phase1(
        profile.model,
        cfg,
        bench.train.subset(fit_idx),
        bench.val,
        loader=profile.data.loader,
        styles=photo_styles(profile),
        log=_log,
        progress=False,
    )


# ---------------------------------------------------------------------- report
def _fmt(iv: dict, digits: int = 3, signed: bool = True) -> str:
    f = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: f"{v:.{digits}f}")
    return f"{f(iv['estimate'])} [{f(iv['low'])}, {f(iv['high'])}]"


def compare(cache: Path, y: np.ndarray, variants: list[str], seeds: list[int], n_resamples: int) -> dict:
    from roadwork_ml.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap
    from roadwork_ml.evaluation.streetvision import paired_streetvision

    out: dict = {"runs": {}, "comparisons": {}, "absolute": {}}
    for seed in seeds:
        ref_key = f"baseline_s{seed}"
        if not (cache / f"{ref_key}.npz").exists():
            continue
        ref = np.load(cache / f"{ref_key}.npz")
        levels = sorted(int(k.split("_")[1]) for k in ref.files if k.startswith("level_"))
        for variant in variants:
            key = f"{variant}_s{seed}"
            if not (cache / f"{key}.npz").exists():
                continue
            new = np.load(cache / f"{key}.npz")
            meta = json.loads((cache / f"{key}.json").read_text())
            out["runs"][key] = meta
            sv = paired_streetvision(
                y,
                {lv: new[f"level_{lv}"] for lv in levels},
                {lv: ref[f"level_{lv}"] for lv in levels},
                n_resamples=n_resamples,
                seed=seed,
            )
            absolute = bootstrap_metrics(y, new["p_val"], metrics=["mcc"], n_resamples=n_resamples, n_jobs=1)
            out["absolute"][key] = {
                "val_select_mcc": absolute["mcc"]["percentile"].to_dict(),
                **{m: sv[m]["new"].to_dict() for m in sv},
            }
            if variant == "baseline":
                continue
            vs = paired_bootstrap(y, new["p_val"], ref["p_val"], "mcc", n_resamples=n_resamples, seed=seed, n_jobs=1)
            out["comparisons"][key] = {
                "val_select_mcc": vs.to_dict(),
                **{m: {"diff": sv[m]["diff"].to_dict()} for m in sv},
            }
    return out


def table(res: dict, variants: list[str], seeds: list[int]) -> str:
    lines = [
        "Absolute (VAL_SELECT; 95 % bootstrap intervals):",
        "",
        "| variant | seed | train s | epochs (best) | VAL_SELECT MCC | L0 MCC | L1 MCC | L2 MCC | L3 MCC | gap L0-L3 | pooled reward |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        for v in variants:
            key = f"{v}_s{seed}"
            if key not in res["absolute"]:
                continue
            a, m = res["absolute"][key], res["runs"][key]
            lines.append(
                f"| {v} | {seed} | {m['train_wall_seconds']:.0f} | {m['epochs_run']} ({m['best_epoch']}) | "
                + " | ".join(
                    _fmt(a[k], signed=False)
                    for k in (
                        "val_select_mcc",
                        "mcc_level_0",
                        "mcc_level_1",
                        "mcc_level_2",
                        "mcc_level_3",
                        "mcc_gap_0_3",
                        "pooled_reward",
                    )
                )
                + " |"
            )
    lines += [
        "",
        "Difference vs baseline of the same seed (paired bootstrap over the same images, 95 % intervals):",
        "",
        "| variant | seed | train time x | Δ VAL_SELECT MCC | Δ L0 MCC | Δ L1 MCC | Δ L2 MCC | Δ L3 MCC | Δ gap L0-L3 | Δ pooled reward |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        base = res["runs"].get(f"baseline_s{seed}")
        for v in variants:
            key = f"{v}_s{seed}"
            if key not in res["comparisons"]:
                continue
            c, m = res["comparisons"][key], res["runs"][key]
            ratio = m["train_epoch_seconds"] / m["epochs_run"] / (base["train_epoch_seconds"] / base["epochs_run"])
            lines.append(
                f"| {v} | {seed} | {ratio:.2f} | {_fmt(c['val_select_mcc']['interval'])} | "
                + " | ".join(
                    _fmt(c[k]["diff"])
                    for k in (
                        "mcc_level_0",
                        "mcc_level_1",
                        "mcc_level_2",
                        "mcc_level_3",
                        "mcc_gap_0_3",
                        "pooled_reward",
                    )
                )
                + " |"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DAGSTER_HOME", "dagster_home"))
    ap.add_argument("--profile", default=os.environ.get("ROADWORK_PROFILE", "demo"))
    ap.add_argument("--variants", default=",".join(SINGLE_CHANGES), help=f"comma list of {ALL}")
    ap.add_argument("--combo-of", default="", help="variants whose overrides the combo variant joins")
    ap.add_argument("--seeds", default="42", help="comma list of train.seed values")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hpo-trials", type=int, default=6)
    ap.add_argument("--hpo-epochs", type=int, default=4)
    ap.add_argument("--hn-epochs", type=int, default=0, help="epochs of each hard-negative fold model (0 = profile)")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--cache-dir", default=None, help="default: <home>/recipe_ablation (outside the repo)")
    ap.add_argument("--set", action="append", default=[], help="override under every variant (smoke runs)")
    ap.add_argument("--report-only", action="store_true", help="no training: the table from the cache")
    ap.add_argument("--out", default="bench/results/recipe_ablation.json")
    args = ap.parse_args()
    args.cache_dir = args.cache_dir or str(Path(args.home) / "recipe_ablation")
    EXTRA[:] = args.set
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(ALL))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {ALL}")
    seeds = [int(s) for s in args.seeds.split(",")]
    bench = Bench(args)
    t0 = time.perf_counter()
    if not args.report_only:  # the listed variants only (another invocation may be training the baseline)
        for seed in seeds:
            for v in variants:
                bench.run_variant(v, seed)
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    res = compare(bench.cache, bench.y, variants, seeds, args.n_resamples)
    hpo_files = sorted(bench.cache.glob("hpo_*.json"))
    res.update(
        {
            "profile": args.profile,
            "split": "VAL_SELECT",
            "n_images": int(len(bench.y)),
            "positive_share": float(bench.y.mean()),
            "seeds": seeds,
            "threads": args.threads,
            "n_resamples": args.n_resamples,
            "variants": {v: bench.overrides(v) for v in variants},
            "combo_of": args.combo_of or None,
            "hpo": [json.loads(f.read_text()) for f in hpo_files],
            "hard_negatives": json.loads((bench.cache / "hard_negatives.json").read_text())
            if (bench.cache / "hard_negatives.json").exists()
            else None,
            "command": " ".join(sys.argv),
            "seconds_this_invocation": time.perf_counter() - t0,
        }
    )
    md = table(res, variants, seeds)
    res["table_markdown"] = md
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
