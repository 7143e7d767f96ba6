"""The ExPLoRA paper's measurement (arXiv 2406.10973) at a scale this project can run, end to end
on synthetic scenes:

1. "web" pre-training stand-in: DINO self-supervised pre-training of a small random-init
   DINOv2-layout ViT on one source style (Mapillary-style daytime street scenes);
2. ExPLoRA on the target style (NATIX-style dashcam frames, mostly night / snow): unlabeled
   TRAIN images, last block in full + Q/V LoRA on the others;
3. on the target: a linear probe (frozen features → logistic regression) and a LoRA
   fine-tune, each run from the pre-trained backbone with and without step 2, same steps;
4. VAL_SELECT MCC of both arms and a paired bootstrap of the difference (same images).

Optionally (``--source-control``) a third arm spends ExPLoRA's step budget on more source-style
pre-training instead, so that "more SSL steps" and "SSL on the target domain" are told apart.

    python bench/explora_gain.py [--scale small|medium] [--threads 1] [--out bench/results/explora_gain.json]

Every number is printed and written to the JSON, whatever it is.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

SCALES = {
    "smoke": {
        "source": 128,
        "target_train": 128,
        "target_val": 96,
        "pretrain_steps": 3,
        "explora_steps": 3,
        "finetune_epochs": 1,
    },
    # images per role; steps per phase. small: a few minutes on 2 CPU cores.
    "small": {
        "source": 2000,
        "target_train": 1200,
        "target_val": 600,
        "pretrain_steps": 400,
        "explora_steps": 150,
        "finetune_epochs": 4,
    },
    "medium": {
        "source": 6000,
        "target_train": 3000,
        "target_val": 1000,
        "pretrain_steps": 1500,
        "explora_steps": 600,
        "finetune_epochs": 6,
    },
}
RENDER = 64  # rendered side, px; the ViT sees 32-px global crops, 16-px local crops (4 x 4 / 2 x 2 patches)


def _render(source: str, style, n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    from roadwork_ml.data.synthetic import generate_source
    from roadwork_ml.data.transforms import image_bytes_to_tensor

    recs = list(generate_source(source, style, RENDER, seed, n))
    return torch.stack([image_bytes_to_tensor(r.image_bytes, RENDER) for r in recs]), np.array([r.label for r in recs])


def _profile(scale: dict):
    from roadwork_ml.config import load_profile

    return load_profile(
        "tiny",
        [
            "model.img_size=32",
            "model.patch_size=8",
            "model.embed_dim=64",
            "model.depth=3",
            "model.num_heads=2",
            "model.head_dropout=0.0",
            "explora.batch_size=32",
            "explora.lr=5.0e-4",
            "explora.weight_decay=0.04",
            "explora.warmup_fraction=0.1",
            "explora.unfrozen_blocks=1",
            "explora.lora={rank: 8, alpha: 8, dropout: 0.0, target_modules: [qv]}",
            "explora.local_crops=4",
            "explora.local_crop_size=16",
            "explora.out_dim=512",
            "explora.head_hidden=128",
            "explora.head_bottleneck=32",
            "explora.teacher_temp=0.04",
            "explora.ema_momentum=[0.99, 1.0]",
            f"explora.steps={scale['explora_steps']}",
            "train.finetune=lora",
            "train.lora={rank: 8, alpha: 16, dropout: 0.0, target_modules: [qkv, proj, fc1, fc2]}",
        ],
    )


@torch.no_grad()
def _features(backbone: torch.nn.Module, images: torch.Tensor, size: int) -> np.ndarray:
    x = torch.nn.functional.interpolate(images.float() / 255, size=(size, size), mode="bilinear", antialias=True)
    mean = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    backbone.eval()
    return torch.cat([backbone((x[i : i + 256] - mean) / std) for i in range(0, len(x), 256)]).numpy()


def linear_probe(state: dict, p, train: tuple, val: tuple) -> np.ndarray:
    """Frozen backbone features → standardised → logistic regression; VAL_SELECT P(roadwork)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from roadwork_ml.contracts import Purpose, Split, require_split
    from roadwork_ml.models.backbone import create_backbone

    require_split(Purpose.FIT_MODEL, Split.TRAIN)
    require_split(Purpose.MODEL_SELECTION, Split.VAL_SELECT)
    backbone = create_backbone(p.model)
    backbone.load_state_dict(state, strict=True)
    ftr, fva = _features(backbone, train[0], p.model.img_size), _features(backbone, val[0], p.model.img_size)
    scaler = StandardScaler().fit(ftr)
    clf = LogisticRegression(max_iter=2000, C=0.5).fit(scaler.transform(ftr), train[1])
    return clf.predict_proba(scaler.transform(fva))[:, 1]


def lora_finetune(state: dict, p, train: tuple, val: tuple, epochs: int, seed: int = 0) -> np.ndarray:
    """LoRA (qkv/proj/fc1/fc2) + head for ``epochs`` on target TRAIN; VAL_SELECT P(roadwork)."""
    import torch.nn.functional as F

    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.models.peft_adapters import apply_finetune, merge_adapters
    from roadwork_ml.training.schedule import warmup_cosine

    torch.manual_seed(seed)
    model = build_classifier(p.model)
    model.backbone.load_state_dict(state, strict=True)
    model = apply_finetune(model, p.train)
    x = torch.nn.functional.interpolate(
        train[0].float() / 255, size=(p.model.img_size,) * 2, mode="bilinear", antialias=True
    )
    y = torch.as_tensor(train[1], dtype=torch.long)
    bs, n = 64, len(x)
    steps = epochs * (n // bs)
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=1e-3, weight_decay=0.01)
    sched = warmup_cosine(opt, steps, steps // 10)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        for b in range(n // bs):
            idx = order[b * bs : (b + 1) * bs]
            xb = x[idx]
            xb = torch.where(torch.rand(len(idx), 1, 1, 1, generator=g) < 0.5, xb.flip(-1), xb)
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    merged = merge_adapters(model).eval()
    xv = torch.nn.functional.interpolate(
        val[0].float() / 255, size=(p.model.img_size,) * 2, mode="bilinear", antialias=True
    )
    with torch.no_grad():
        return torch.cat([merged(xv[i : i + 256]).softmax(1)[:, 1] for i in range(0, len(xv), 256)]).numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument(
        "--threads", type=int, default=1, help="1 on a shared CPU: 2 threads ran 4.7x slower under contention"
    )
    parser.add_argument("--source-control", action="store_true", help="also run the more-source-SSL arm")
    parser.add_argument("--out", type=Path, default=Path("bench/results/explora_gain.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from roadwork_ml.config import load_profile
    from roadwork_ml.evaluation.bootstrap import paired_bootstrap
    from roadwork_ml.evaluation.metrics import mcc
    from roadwork_ml.training.explora import explora_backbone, run_explora

    scale = SCALES[args.scale]
    p = _profile(scale)
    base = load_profile("production").data.sources
    src_style = base["mapillary"].synthetic.model_copy(
        update={"night_rate": 0.0, "weather_probs": {"clear": 1.0, "rain": 0.0, "snow": 0.0, "fog": 0.0}}
    )
    tgt_style = base["natix"].synthetic.model_copy(
        update={
            "night_rate": 0.7,
            "label_noise": 0.0,
            "weather_probs": {"clear": 0.2, "rain": 0.2, "snow": 0.5, "fog": 0.1},
        }
    )
    t0 = time.perf_counter()
    src, _ = _render("mapillary", src_style, scale["source"], seed=11)
    tgt_x, tgt_y = _render("natix", tgt_style, scale["target_train"] + scale["target_val"], seed=22)
    n_tr = scale["target_train"]
    train, val = (tgt_x[:n_tr], tgt_y[:n_tr]), (tgt_x[n_tr:], tgt_y[n_tr:])
    render_s = time.perf_counter() - t0
    print(
        f"rendered {len(src)} source + {len(tgt_x)} target images at {RENDER}px in {render_s:.0f}s; target positives {tgt_y.mean():.2f}"
    )

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    torch.manual_seed(0)
    pre_cfg = p.explora.model_copy(update={"steps": scale["pretrain_steps"], "lr": 1e-3})
    pre = run_explora(
        src,
        ["train"],
        p.model,
        pre_cfg,
        initial_state=explora_backbone(p.model).state_dict(),
        train_all=True,
        log=print,
    )
    timings["pretrain_s"] = time.perf_counter() - t0
    print(
        f"pre-training: loss {pre.report['loss_first']:.3f} → {pre.report['loss_last']:.3f}, teacher entropy {pre.report['teacher_entropy']:.3f}, embedding std {pre.report['embedding_std']:.3f} ({timings['pretrain_s']:.0f}s)"
    )

    t0 = time.perf_counter()
    exp = run_explora(
        train[0], ["train"], p.model, p.explora, initial_state=pre.backbone_state, probe_images=val[0][:256], log=print
    )
    timings["explora_s"] = time.perf_counter() - t0
    print(
        f"ExPLoRA: loss {exp.report['loss_first']:.3f} → {exp.report['loss_last']:.3f}, teacher entropy {exp.report['teacher_entropy']:.3f}, embedding std {exp.report['embedding_std']:.3f}, trainable share {exp.report['backbone_trainable_share']:.3f}, unintended changes {exp.report['unintended_changes']} ({timings['explora_s']:.0f}s)"
    )

    arms = {"pretrained": pre.backbone_state, "explora": exp.backbone_state}
    if args.source_control:
        ctrl_cfg = p.explora.model_copy(update={"steps": scale["explora_steps"]})
        arms["more_source_ssl"] = run_explora(
            src, ["train"], p.model, ctrl_cfg, initial_state=pre.backbone_state
        ).backbone_state

    results: dict[str, dict] = {}
    for name, state in arms.items():
        t0 = time.perf_counter()
        lp = linear_probe(state, p, train, val)
        ft = lora_finetune(state, p, train, val, scale["finetune_epochs"])
        results[name] = {
            "linear_probe_probs": lp,
            "lora_probs": ft,
            "linear_probe_mcc": mcc(val[1], (lp > 0.5).astype(int)),
            "lora_mcc": mcc(val[1], (ft > 0.5).astype(int)),
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"{name:>16}: linear-probe VAL_SELECT MCC {results[name]['linear_probe_mcc']:.4f}, LoRA fine-tune MCC {results[name]['lora_mcc']:.4f}"
        )

    # references that put the arms in context: the same probe on a random-init backbone and on raw pixels
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rand_lp = linear_probe(explora_backbone(p.model).state_dict(), p, train, val)
    px = [
        torch.nn.functional.interpolate(a.float() / 255, size=(p.model.img_size,) * 2, mode="bilinear", antialias=True)
        .flatten(1)
        .numpy()
        for a in (train[0], val[0])
    ]
    sc = StandardScaler().fit(px[0])
    pix_lp = (
        LogisticRegression(max_iter=2000, C=0.5)
        .fit(sc.transform(px[0]), train[1])
        .predict_proba(sc.transform(px[1]))[:, 1]
    )
    references = {
        "random_init_linear_probe_mcc": mcc(val[1], (rand_lp > 0.5).astype(int)),
        "raw_pixels_linear_probe_mcc": mcc(val[1], (pix_lp > 0.5).astype(int)),
    }
    print(
        f"references: linear probe on a random-init backbone MCC {references['random_init_linear_probe_mcc']:.4f}, on raw pixels {references['raw_pixels_linear_probe_mcc']:.4f}"
    )

    comparisons = {}
    for kind in ("linear_probe", "lora"):
        c = paired_bootstrap(
            val[1],
            results["explora"][f"{kind}_probs"],
            results["pretrained"][f"{kind}_probs"],
            metric="mcc",
            n_resamples=2000,
            seed=0,
            n_jobs=1,
        )
        comparisons[kind] = c.to_dict()
        iv = comparisons[kind]["interval"]
        print(
            f"{kind}: MCC with ExPLoRA {c.new:.4f} vs without {c.ref:.4f}: diff {c.diff:+.4f}, 95% paired-bootstrap interval {iv}"
        )

    out = {
        "scale": args.scale,
        **scale,
        "threads": args.threads,
        "render_seconds": render_s,
        **timings,
        "model": {
            k: getattr(p.model, k) for k in ("backbone", "img_size", "patch_size", "embed_dim", "depth", "num_heads")
        },
        "explora_config": p.explora.model_dump(mode="json"),
        "pretrain_report": {k: v for k, v in pre.report.items() if k not in ("losses", "changed_params")},
        "explora_report": {k: v for k, v in exp.report.items() if k not in ("losses",)},
        "val_select": {"n": len(val[1]), "positives": int(val[1].sum())},
        "arms": {k: {kk: vv for kk, vv in v.items() if not kk.endswith("_probs")} for k, v in results.items()},
        "paired_bootstrap": comparisons,
        "references": references,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
