"""The backbone factory and local weight loading, on DINOv2-layout ViTs made here."""

import re

import pytest
import timm
import torch
from safetensors.torch import save_file

from roadwork_ml.config import load_profile
from roadwork_ml.models import build_classifier, create_backbone, load_backbone_weights, resolve_weights_file
from roadwork_ml.models.backbone import hf_dinov2_to_timm

ARCH = dict(num_classes=0, img_size=28, patch_size=14, embed_dim=32, depth=2, num_heads=2, init_values=1e-5)


def _timm_vit(seed: int, img_size: int = 28):
    torch.manual_seed(seed)
    return timm.create_model("vit_small_patch14_dinov2", pretrained=False, **{**ARCH, "img_size": img_size}).eval()


def _to_hf(state: dict) -> dict:
    """Independent inverse of the converter: timm keys → transformers Dinov2Model keys."""
    out = {"embeddings.mask_token": torch.zeros(1, state["cls_token"].shape[-1])}
    for k, v in state.items():
        if k == "cls_token":
            out["embeddings.cls_token"] = v
        elif k == "pos_embed":
            out["embeddings.position_embeddings"] = v
        elif k.startswith("patch_embed.proj."):
            out["embeddings.patch_embeddings.projection." + k.split(".")[-1]] = v
        elif k.startswith("norm."):
            out["layernorm." + k.split(".")[-1]] = v
        elif m := re.match(r"blocks\.(\d+)\.(.+)", k):
            i, rest = m.groups()
            p = f"encoder.layer.{i}."
            if rest.startswith("attn.qkv."):
                q, kk, vv = v.chunk(3, dim=0)
                kind = rest.split(".")[-1]
                out[p + f"attention.attention.query.{kind}"] = q
                out[p + f"attention.attention.key.{kind}"] = kk
                out[p + f"attention.attention.value.{kind}"] = vv
            elif rest.startswith("attn.proj."):
                out[p + "attention.output.dense." + rest.split(".")[-1]] = v
            elif rest == "ls1.gamma":
                out[p + "layer_scale1.lambda1"] = v
            elif rest == "ls2.gamma":
                out[p + "layer_scale2.lambda1"] = v
            else:
                out[p + rest] = v
    return out


def _fresh():
    return _timm_vit(seed=999)


@pytest.fixture(scope="module")
def reference():
    model = _timm_vit(seed=1)
    x = torch.rand(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model, x, model(x)


def _check_same(model, x, y):
    with torch.no_grad():
        assert torch.allclose(model(x), y, atol=1e-6)


def test_loads_timm_safetensors(tmp_path, reference):
    ref, x, y = reference
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model = _fresh()
    load_backbone_weights(model, tmp_path / "w.safetensors")
    _check_same(model, x, y)


def test_loads_torch_checkpoint_with_wrapper_and_prefix(tmp_path, reference):
    ref, x, y = reference
    torch.save({"model": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "w.pth")
    model = _fresh()
    load_backbone_weights(model, tmp_path / "w.pth")
    _check_same(model, x, y)


def test_loads_hugging_face_cache_layout(tmp_path, reference):
    ref, x, y = reference
    repo = tmp_path / "hub" / "models--facebook--dinov2-tiny"
    snap = repo / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    save_file({k: v.contiguous() for k, v in _to_hf(ref.state_dict()).items()}, str(snap / "model.safetensors"))
    assert resolve_weights_file(repo) == snap / "model.safetensors"
    model = _fresh()
    load_backbone_weights(model, repo)
    _check_same(model, x, y)


def test_position_embeddings_are_resampled_to_the_model_grid(tmp_path):
    big = _timm_vit(seed=2, img_size=56)  # 4x4 grid, as DINOv2 ships 37x37 for 518 px
    save_file({k: v.contiguous() for k, v in big.state_dict().items()}, str(tmp_path / "w.safetensors"))
    small = _fresh()  # 2x2 grid
    load_backbone_weights(small, tmp_path / "w.safetensors")
    assert small.pos_embed.shape == (1, 5, 32)
    assert torch.equal(small.blocks[0].attn.qkv.weight, big.blocks[0].attn.qkv.weight)


def test_mismatched_weights_raise_clear_errors(tmp_path):
    other = timm.create_model("vit_small_patch14_dinov2", pretrained=False, **{**ARCH, "embed_dim": 16})
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(tmp_path / "w.safetensors"))
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_backbone_weights(_fresh(), tmp_path / "w.safetensors")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_weights_file(tmp_path / "nope")
    with pytest.raises(ValueError, match="unexpected key"):
        hf_dinov2_to_timm({"encoder.layer.0.weird.weight": torch.ones(1)})


def test_factory_builds_profiles_and_refuses_overrides_with_weights():
    demo = load_profile("tiny").model
    model = build_classifier(demo)
    out = model(torch.rand(3, 3, demo.img_size, demo.img_size))
    assert out.shape == (3, 2)
    assert model.backbone.patch_embed.patch_size == (demo.patch_size, demo.patch_size)
    with pytest.raises(ValueError, match="architecture overrides"):
        create_backbone(demo.model_copy(update={"weights_path": "/w.safetensors"}))


def test_production_architecture_is_dinov2_large():
    cfg = load_profile("production").model
    with torch.device("meta"):
        backbone = create_backbone(cfg)
    assert (backbone.embed_dim, len(backbone.blocks), backbone.patch_embed.patch_size) == (1024, 24, (14, 14))
