"""ExPLoRA: leakage contract, what trains, blocking checks (and that each can fail), merged reload."""

from __future__ import annotations

import pytest
import torch

from roadwork_ml.config import load_profile
from roadwork_ml.contracts import PRODUCTION_TRAFFIC, LeakageError, Purpose, Split, require_split
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.training.explora import (
    DINOHead,
    changed_parameters,
    explora_backbone,
    explora_checks,
    init_from_explora,
    intended_parameters,
    multi_crop,
    run_explora,
    save_explora_backbone,
    teacher_collapse_stats,
)


@pytest.fixture(autouse=True, scope="module")
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _images(n: int = 48, size: int = 48, seed: int = 0) -> torch.Tensor:
    """Images with structure (bars of random colour), so crops of one image resemble each other."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 1, 1, generator=g) * 255
    bars = (torch.arange(size) // 8 % 2).view(1, 1, 1, size).float() * torch.rand(n, 3, 1, 1, generator=g) * 120
    noise = torch.rand(n, 3, size, size, generator=g) * 40
    return (base * 0.5 + bars + noise).clamp(0, 255).to(torch.uint8)


def test_self_supervised_purpose_allows_train_and_traffic_only():
    require_split(Purpose.SELF_SUPERVISED, [Split.TRAIN, PRODUCTION_TRAFFIC])
    for split in (Split.VAL_SELECT, Split.VAL_CALIB, Split.VAL_TEST):
        with pytest.raises(LeakageError, match=split.value):
            require_split(Purpose.SELF_SUPERVISED, [Split.TRAIN, split])
    with pytest.raises(LeakageError, match="production traffic"):
        require_split(Purpose.FIT_MODEL, PRODUCTION_TRAFFIC)


def test_run_explora_refuses_validation_images_before_training():
    p = load_profile("tiny")
    with pytest.raises(LeakageError, match="val_select"):
        run_explora(_images(8), ["train", "val_select"], p.model, p.explora)


def test_multi_crop_shapes_and_range():
    p = load_profile("tiny")
    x = _images(5).float() / 255
    g, loc = multi_crop(x, p.explora, 32, torch.Generator().manual_seed(0))
    assert g.shape == (10, 3, 32, 32) and loc.shape == (5 * p.explora.local_crops, 3, 16, 16)
    assert g.min() >= 0 and g.max() <= 1 and not torch.equal(g[:5], g[5:])  # two different global crops


def test_explora_last_block_full_lora_on_the_rest_checks_green(tmp_path):
    p = load_profile(
        "tiny", ["model.depth=2", "explora.unfrozen_blocks=1", "explora.steps=4", "explora.ibot_weight=1.0"]
    )
    torch.manual_seed(0)
    start = explora_backbone(p.model).state_dict()
    data = [(img, 1) for img in _images(40)]  # a dataset of (image, label): labels ignored
    result = run_explora(data, ["train", PRODUCTION_TRAFFIC], p.model, p.explora, initial_state=start)
    r = result.report
    assert r["lora_blocks"] == [0] and r["unfrozen_blocks"] == [1]
    assert all(torch.isfinite(torch.tensor(r["losses"])))
    changed = set(r["changed_params"])
    assert "blocks.0.attn.qkv.weight" in changed and "blocks.1.mlp.fc1.weight" in changed
    assert not changed & {
        "blocks.0.mlp.fc1.weight",
        "blocks.0.attn.proj.weight",
        "pos_embed",
        "cls_token",
        "patch_embed.proj.weight",
    }
    d = start["blocks.0.attn.qkv.weight"].shape[1]
    assert torch.equal(
        result.backbone_state["blocks.0.attn.qkv.weight"][d : 2 * d], start["blocks.0.attn.qkv.weight"][d : 2 * d]
    )
    save_explora_backbone(result, tmp_path / "explora", p.model)
    checks = {c.name: c for c in explora_checks(result, p.explora, tmp_path / "explora")}
    assert all(c.passed for c in checks.values()), checks
    # phase 1 starts from the merged backbone: a plain classifier, weights bit-identical
    model = init_from_explora(build_classifier(p.model), tmp_path / "explora")
    assert all(torch.equal(model.backbone.state_dict()[k], v) for k, v in result.backbone_state.items())
    # a tampered file fails the reload check
    w = tmp_path / "explora" / "backbone.safetensors"
    w.write_bytes(w.read_bytes()[:-4] + b"\x01\x02\x03\x04")
    with pytest.raises(Exception, match="sha256"):
        explora_checks(result, p.explora, tmp_path / "explora")


def test_tiny_profile_runs_pure_lora():
    p = load_profile("tiny")
    result = run_explora(_images(16), ["train"], p.model, p.explora)
    assert result.report["lora_blocks"] == [0] and result.report["unfrozen_blocks"] == []
    assert result.report["backbone_trainable_share"] < 0.5 and not result.report["unintended_changes"]


def test_only_intended_check_can_fail():
    p = load_profile("tiny", ["model.depth=2", "explora.unfrozen_blocks=1", "explora.unfreeze_norms=false"])
    state = explora_backbone(p.model).state_dict()
    intended = intended_parameters(list(state), 2, p.explora)
    assert intended["blocks.1.mlp.fc1.weight"] == "block" and intended["blocks.0.attn.qkv.weight"] == "lora_qv"
    assert "blocks.0.norm1.weight" not in intended and "blocks.0.mlp.fc1.weight" not in intended
    after = {k: v.clone() for k, v in state.items()}
    after["blocks.0.mlp.fc1.weight"] += 1e-3  # a frozen weight moved
    d = state["blocks.0.attn.qkv.weight"].shape[1]
    after["blocks.0.attn.qkv.weight"][d] += 1e-3  # a K row moved
    out = changed_parameters(state, after, intended)
    assert set(out["unintended_changes"]) == {"blocks.0.mlp.fc1.weight", "blocks.0.attn.qkv.weight[K rows]"}


def test_collapse_statistics_detect_collapse():
    p = load_profile("tiny", ["model.depth=2"])
    torch.manual_seed(0)
    vit = explora_backbone(p.model).eval()
    head = DINOHead(48, 64, 32, 16).eval()
    x = _images(64)
    center = torch.zeros(64)
    healthy = teacher_collapse_stats(vit, head, x, 32, center, 0.07, torch.device("cpu"))
    assert healthy["embedding_std"] > 0.05 and healthy["teacher_entropy"] > 0.05
    # one prototype dominates every image: entropy of the mean distribution → 0
    biased = torch.zeros(64)
    biased[3] = -100.0  # centre subtracted: prototype 3 wins by 100 / 0.07
    dominated = teacher_collapse_stats(vit, head, x, 32, biased, 0.07, torch.device("cpu"))
    assert dominated["teacher_entropy"] < 0.01
    # every image maps to one point: per-dim std of the embeddings → 0
    with torch.no_grad():
        vit.norm.weight.zero_()
        vit.norm.bias.fill_(0.3)
    constant = teacher_collapse_stats(vit, head, x, 32, center, 0.07, torch.device("cpu"))
    assert constant["embedding_std"] < 1e-4 < p.explora.min_embedding_std
