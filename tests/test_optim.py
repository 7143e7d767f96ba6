"""timm optimizer factory, layer-wise LR decay, SAM, EMA, clipping; the trainer on streamed data."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from roadwork_ml.config import DecodeConfig, LoaderConfig, load_profile
from roadwork_ml.models import build_classifier
from roadwork_ml.training.dataset import ManifestImageDataset
from roadwork_ml.training.optim import SAM, build_ema, build_optimizer, clip_gradients
from roadwork_ml.training.trainer import train_classifier

sys.path.insert(0, str(Path(__file__).parent))
from test_trainer import _cfgs, _data


def _vit(**model):
    p = load_profile("tiny", ["model.img_size=16", "model.patch_size=4", "model.embed_dim=32", "model.depth=3"])
    return build_classifier(p.model.model_copy(update=model)), p.train


def test_default_groups_reproduce_the_original_adamw():
    model, t = _vit()
    opt = build_optimizer(model, t)
    assert type(opt) is torch.optim.AdamW
    by_lr = {}
    for g in opt.param_groups:
        by_lr.setdefault(g["lr"], 0)
        by_lr[g["lr"]] += sum(p.numel() for p in g["params"])
        assert g["weight_decay"] == t.weight_decay
    n_backbone = sum(p.numel() for p in model.backbone.parameters())
    assert (
        by_lr[t.lr * t.backbone_lr_mult] == n_backbone
        if t.backbone_lr_mult != 1
        else sum(by_lr.values()) == sum(p.numel() for p in model.parameters())
    )


@pytest.mark.parametrize("name,cls", [("sgd", torch.optim.SGD), ("lamb", None), ("adamw", torch.optim.AdamW)])
def test_timm_factory_names(name, cls):
    model, t = _vit()
    opt = build_optimizer(model, t.model_copy(update={"optimizer": t.optimizer.model_copy(update={"name": name})}))
    assert type(opt).__name__.lower().startswith(name) if cls is None else isinstance(opt, cls)


@pytest.mark.parametrize("name", ["adamw", "sgd", "nesterov", "lamb"])
def test_fused_kernel_where_torch_has_one_and_its_steps_match_the_loop(name):
    """``optimizer.fused`` picks torch's fused kernel for AdamW / SGD (nesterov is timm's
    partial of SGD) and leaves the rest alone; three fused steps land on the for-loop's weights."""
    t = _vit()[1]
    weights = {}
    for fused in (True, False):
        torch.manual_seed(0)
        model = _vit()[0]
        oc = t.optimizer.model_copy(update={"name": name, "fused": fused})
        opt = build_optimizer(model, t.model_copy(update={"optimizer": oc}))
        assert bool(opt.defaults.get("fused")) is (fused and name != "lamb")
        start = torch.cat([p.detach().flatten() for p in model.parameters()])
        x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), torch.tensor([0, 1, 1, 0])).backward()
            opt.step()
        weights[fused] = torch.cat([p.detach().flatten() for p in model.parameters()])
        assert (weights[fused] - start).abs().max() > 1e-4  # the steps moved the weights
    # Adam normalises each update, so a weight whose gradient is ~0 amplifies rounding: allow 5 %
    # of one step (lr); a different update rule would be off by whole steps
    torch.testing.assert_close(weights[True], weights[False], rtol=1e-4, atol=0.05 * t.lr)


def test_layer_decay_scales_vit_blocks_geometrically():
    model, t = _vit()
    t = t.model_copy(update={"backbone_lr_mult": 0.5, "optimizer": t.optimizer.model_copy(update={"layer_decay": 0.5})})
    opt = build_optimizer(model, t)
    lr_of = {}
    for g in opt.param_groups:
        for p in g["params"]:
            lr_of[id(p)] = g["lr"]
    blk = [lr_of[id(next(model.backbone.blocks[i].parameters()))] for i in range(3)]
    assert blk[0] == pytest.approx(blk[1] * 0.5) and blk[1] == pytest.approx(blk[2] * 0.5)
    assert lr_of[id(model.backbone.patch_embed.proj.weight)] == pytest.approx(blk[0] * 0.5)
    assert lr_of[id(next(model.head.parameters()))] == pytest.approx(t.lr)
    assert max(lr_of[id(p)] for p in model.backbone.parameters()) <= t.lr * 0.5 + 1e-12


def test_sam_step_uses_the_perturbed_gradient_and_restores_weights():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    base = torch.optim.SGD([w], lr=0.1)
    sam = SAM(base, rho=0.5)
    f = lambda v: (v**4).sum()
    f(w).backward()
    g0 = w.grad.clone()
    sam.first_step()
    w_adv = w.detach().clone()
    assert torch.allclose(w_adv, torch.tensor([1.0, -2.0]) + 0.5 * g0 / g0.norm())
    sam.zero_grad()
    f(w).backward()
    g_adv = w.grad.clone()
    sam.second_step()
    assert torch.allclose(w.detach(), torch.tensor([1.0, -2.0]) - 0.1 * g_adv)


def test_clip_and_ema():
    model, t = _vit()
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = clip_gradients(model, 1.0)
    assert before > 1 and clip_gradients(model, None) == pytest.approx(1.0, rel=1e-4)
    t = t.model_copy(update={"ema": t.ema.model_copy(update={"enabled": True, "decay": 0.5, "warmup": False})})
    ema = build_ema(model, t)
    p0 = next(model.parameters()).detach().clone()
    with torch.no_grad():
        next(model.parameters()).add_(2.0)
    ema.update(model, step=2)  # timm: step 1 copies the weights, later steps average
    assert torch.allclose(next(ema.module.parameters()), p0 + 1.0)  # 0.5 * old + 0.5 * new


def _to_disk(split, tmp_path):
    paths = []
    for i, img in enumerate(split.images):
        p = tmp_path / f"{split.split.value}_{i}.png"
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(p)
        paths.append(p)
    return ManifestImageDataset(
        paths,
        split.labels.numpy(),
        split.split,
        16,
        DecodeConfig(max_pixels=10**6, min_side=8, store_max_side=64, store_jpeg_quality=90),
        sources=np.where(np.arange(len(paths)) % 3 == 0, "natix", "roadwork"),
    )


def test_streamed_training_equals_in_memory_and_new_knobs_run(tmp_path):
    mcfg, tcfg = _cfgs(epochs=2)
    train, val = _data(128, 0, "train"), _data(64, 1, "val_select")
    torch.manual_seed(0)
    a = build_classifier(mcfg)
    ra = train_classifier(a, train, val, tcfg, progress=False, log=lambda s: None)
    torch.manual_seed(0)
    b = build_classifier(mcfg)
    rb = train_classifier(
        b,
        _to_disk(train, tmp_path),
        _to_disk(val, tmp_path),
        tcfg,
        progress=False,
        log=lambda s: None,
        loader=LoaderConfig(num_workers=2, persistent_workers=True),
    )
    assert ra.step_losses == pytest.approx(rb.step_losses, rel=1e-5)  # PNG round trip is lossless: same batches
    # every new knob together: validator policy, balanced sampler, focal, SAM, EMA, hard-negative weights
    opt = tcfg.optimizer.model_copy(update={"sam": True, "name": "sgd", "grad_clip_norm": 5.0})
    t = tcfg.model_copy(
        update={
            "epochs": 1,
            "augment": True,
            "augmentation": tcfg.augmentation.model_copy(update={"policy": "validator", "validator_size": 32}),
            "sampler": tcfg.sampler.model_copy(update={"kind": "class_source"}),
            "loss": tcfg.loss.model_copy(update={"name": "focal"}),
            "optimizer": opt,
            "ema": tcfg.ema.model_copy(update={"enabled": True, "decay": 0.9}),
        }
    )
    torch.manual_seed(0)
    c = build_classifier(mcfg)
    small = _to_disk(train, tmp_path).subset(range(64))
    rc = train_classifier(c, small, val, t, progress=False, log=lambda s: None, sample_weights=np.full(64, 2.0))
    assert all(h.val_mcc_ema is not None for h in rc.history) and np.isfinite(rc.step_losses).all()
    assert rc.ema_state is not None and set(rc.ema_state) == set(c.state_dict())
    with pytest.raises(ValueError, match="sample_weights"):
        train_classifier(c, train, val, t, progress=False, log=lambda s: None, sample_weights=np.ones(3))


@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_peft_model_groups_hold_each_trainable_parameter_once(mode):
    """A peft model names its backbone base_model.model.backbone.*: the adapters must land in the
    backbone group (at backbone_lr_mult) and the head in the head group, each exactly once."""
    from roadwork_ml.models.peft_adapters import apply_finetune

    model, t = _vit()
    t = t.model_copy(update={"finetune": mode, "backbone_lr_mult": 0.1})
    peft_model = apply_finetune(model, t)
    opt = build_optimizer(peft_model, t)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    trainable = {id(p) for p in peft_model.parameters() if p.requires_grad}
    assert len(seen) == len(set(seen)) and set(seen) == trainable
    lora_ids = {id(p) for n, p in peft_model.named_parameters() if "lora_" in n}
    for g in opt.param_groups:
        ids = {id(p) for p in g["params"]}
        assert g["lr"] == pytest.approx(t.lr * 0.1) if ids & lora_ids else g["lr"] == pytest.approx(t.lr)
