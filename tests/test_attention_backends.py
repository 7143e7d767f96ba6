"""model.attention: sdpa | math | flash on the tiny ViT."""

from __future__ import annotations

import pytest
import torch

from roadwork_ml.config import load_profile
from roadwork_ml.models.backbone import FlashAttention, set_attention_backend
from roadwork_ml.models.classifier import build_classifier


def _model(attention: str, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    p = load_profile("tiny", ["model.depth=2", f"model.attention={attention}"])
    torch.manual_seed(0)
    return build_classifier(p.model).eval().to(dtype)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 5e-2)])
def test_sdpa_and_math_agree_on_cpu(dtype, tol):
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        sdpa, math = _model("sdpa", dtype)(x).float(), _model("math", dtype)(x).float()
    diff = (sdpa - math).abs().max().item()
    assert diff <= tol, diff
    # not trivially equal: the two backends are different code paths
    m = _model("math")
    assert all(not blk.attn.fused_attn for blk in m.backbone.blocks)


def test_a_wrong_attention_output_is_caught():
    """The agreement check can fail: perturbing one backend's scale shows up above tolerance."""
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    ref, broken = _model("sdpa"), _model("math")
    for blk in broken.backbone.blocks:
        blk.attn.scale *= 1.5
    with torch.no_grad():
        assert (ref(x) - broken(x)).abs().max().item() > 1e-5


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal")
def test_flash_without_cuda_is_a_clear_error():
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        _model("flash")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention needs CUDA (none on this machine)")
def test_flash_matches_sdpa_on_cuda():
    x = torch.rand(6, 3, 32, 32, device="cuda", generator=torch.Generator("cuda").manual_seed(1)).bfloat16()
    sdpa = _model("sdpa", torch.bfloat16).cuda()
    flash = _model("flash", torch.bfloat16).cuda()
    assert isinstance(flash.backbone.blocks[0].attn, FlashAttention)
    with torch.no_grad():
        assert (sdpa(x).float() - flash(x).float()).abs().max().item() <= 5e-2


def test_backend_switch_keeps_state_dict():
    m = _model("sdpa")
    keys = list(m.state_dict())
    assert set_attention_backend(m, "math") == 2
    assert list(m.state_dict()) == keys
    with pytest.raises(ValueError, match="must be one of"):
        set_attention_backend(m, "xformers")
