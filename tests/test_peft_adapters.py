"""LoRA / DoRA with peft on the tiny ViT: what trains, merging, adapters on disk, ONNX parity."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from roadwork_ml.artifacts import IntegrityError
from roadwork_ml.config import load_profile
from roadwork_ml.export.onnx_export import export_onnx, onnx_parity
from roadwork_ml.models.classifier import build_classifier
from roadwork_ml.models.inference import view_spec
from roadwork_ml.models.multiview import MultiViewClassifier
from roadwork_ml.models.peft_adapters import (
    QVLoraLinear,
    add_lora,
    apply_finetune,
    load_adapters,
    measure_train_step,
    merge_adapters,
    parameter_counts,
    save_adapters,
)

ALL = ["qkv", "proj", "fc1", "fc2"]


@pytest.fixture(autouse=True, scope="module")
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _profile(finetune: str = "lora", targets: list[str] = ALL):
    return load_profile(
        "tiny",
        [
            "model.depth=2",
            f"train.finetune={finetune}",
            f"train.lora.target_modules={targets}",
        ],
    )


def _data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    return x, (x[:, 0].mean((1, 2)) > 0.5).long()


def _train(model: torch.nn.Module, steps: int = 5, lr: float = 5e-2) -> None:
    """A few real AdamW steps (weight decay on) so that every trainable tensor moves."""
    x, y = _data()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.05)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.mark.parametrize("finetune,targets", [("lora", ALL), ("dora", ALL), ("lora", ["qv"])])
def test_only_adapters_and_head_change_and_merge_matches(finetune, targets):
    p = _profile(finetune, targets)
    torch.manual_seed(0)
    model = apply_finetune(build_classifier(p.model), p.train)
    before = {n: t.detach().clone() for n, t in model.named_parameters()}
    trainable = {n for n, t in model.named_parameters() if t.requires_grad}
    assert trainable and all(("lora_" in n) or ("modules_to_save" in n) for n in trainable), sorted(trainable)
    assert any("lora_magnitude_vector" in n for n in trainable) == (finetune == "dora")
    _train(model)
    changed = {n for n, t in model.named_parameters() if not torch.equal(t, before[n])}
    assert changed == trainable  # every trainable tensor moved, nothing else did

    x, _ = _data(8, seed=3)
    with torch.no_grad():
        unmerged = model(x)
    merged = merge_adapters(model).eval()
    assert type(merged).__name__ == "RoadworkClassifier"
    with torch.no_grad():
        assert (merged(x) - unmerged).abs().max().item() <= 1e-5
    # the merged weights load strictly into a plain classifier: downstream code sees no peft
    plain = build_classifier(p.model)
    plain.load_state_dict(merged.state_dict(), strict=True)


def test_qv_lora_leaves_k_untouched():
    p = _profile("lora", ["qv"])
    torch.manual_seed(0)
    model = build_classifier(p.model)
    qkv0 = model.backbone.blocks[0].attn.qkv.weight.detach().clone()
    peft_model = apply_finetune(model, p.train)
    assert isinstance(peft_model.base_model.model.backbone.blocks[0].attn.qkv, QVLoraLinear)
    _train(peft_model)
    qkv1 = merge_adapters(peft_model).backbone.blocks[0].attn.qkv.weight.detach()
    d = qkv0.shape[1]
    assert torch.equal(qkv1[d : 2 * d], qkv0[d : 2 * d])  # K rows
    assert not torch.equal(qkv1[:d], qkv0[:d]) and not torch.equal(qkv1[2 * d :], qkv0[2 * d :])


def test_qv_rejects_dora():
    with pytest.raises(ValueError, match="DoRA"):
        apply_finetune(
            build_classifier(_profile("dora", ["qv"]).model),
            _profile("dora", ["qv"]).train,
        )


def test_linear_probe_and_full():
    p = _profile("linear_probe")
    model = apply_finetune(build_classifier(p.model), p.train)
    assert {n for n, t in model.named_parameters() if t.requires_grad} == {
        "head.net.1.weight",
        "head.net.1.bias",
    }
    full = apply_finetune(build_classifier(p.model), _profile("full").train)
    assert parameter_counts(full)["trainable_share"] == 1.0


def test_freeze_backbone_needs_linear_probe():
    with pytest.raises(ValueError, match="linear_probe"):
        load_profile("tiny", ["model.freeze_backbone=true"])


def test_adapters_roundtrip_safetensors(tmp_path):
    p = _profile("lora", ["qv", "fc1"])
    torch.manual_seed(0)
    model = apply_finetune(build_classifier(p.model), p.train)
    base = copy.deepcopy(model.get_base_model())  # weights before training (adapters are not merged into it)
    _train(model)
    save_adapters(model, tmp_path / "adapter", p.train.lora, use_dora=False)
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    torch.manual_seed(0)
    fresh = build_classifier(p.model)
    fresh.load_state_dict({k: v for k, v in base.state_dict().items()}, strict=False)
    reloaded = load_adapters(fresh, tmp_path / "adapter").eval()
    x, _ = _data(8, seed=4)
    with torch.no_grad():
        assert torch.equal(reloaded(x), model.eval()(x))
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError):
        load_adapters(build_classifier(p.model), tmp_path / "adapter")


@pytest.mark.parametrize("finetune", ["lora", "dora"])
def test_merged_model_exports_with_onnx_parity(tmp_path, finetune):
    p = load_profile("tiny", [f"train.finetune={finetune}"])
    torch.manual_seed(0)
    model = apply_finetune(build_classifier(p.model), p.train)
    _train(model)
    merged = merge_adapters(model).eval()
    mv = MultiViewClassifier(merged, view_spec(p.model, p.inference), "mean").eval()
    info = export_onnx(mv, tmp_path / "model.onnx", p.inference.input_size)
    assert info.n_views == 10
    imgs = torch.rand(
        12,
        3,
        p.inference.input_size,
        p.inference.input_size,
        generator=torch.Generator().manual_seed(5),
    )
    report = onnx_parity(mv, tmp_path / "model.onnx", imgs, batch_size=5)
    assert report.passed(p.export.parity_tolerance), report


def test_measure_train_step_reports_costs():
    p = _profile("lora")
    model = apply_finetune(build_classifier(p.model), p.train)
    x, y = _data(8)
    m = measure_train_step(model, x, y, steps=3)
    assert 0 < m["trainable_share"] < 0.2 and m["trainable_params"] == parameter_counts(model)["trainable_params"]
    assert m["step_seconds"] > 0 and m["peak_memory_bytes"] > 0 and m["peak_memory_kind"] == "process_max_rss"


def test_no_vit_layers_is_an_error():
    p = load_profile("demo")  # resnet10t: no qkv / fc1 Linear layers
    with pytest.raises(ValueError):
        add_lora(build_classifier(p.model), p.train.lora)


def test_phase1_trainer_trains_a_lora_model_then_it_merges(tmp_path):
    """The phase-1 path: train_classifier on the peft model, merge, save_checkpoint, reload strictly."""
    from roadwork_ml.contracts import Split
    from roadwork_ml.training.checkpoint import load_checkpoint, save_checkpoint
    from roadwork_ml.training.trainer import TensorSplit, train_classifier

    p = load_profile("tiny", ["train.finetune=lora", "train.augment=false"])
    torch.manual_seed(0)
    model = apply_finetune(build_classifier(p.model), p.train)
    frozen = {n: t.detach().clone() for n, t in model.named_parameters() if not t.requires_grad}
    g = torch.Generator().manual_seed(0)
    imgs = (torch.rand(48, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    labels = (imgs[:, 0].float().mean((1, 2)) > 127).long()
    train_classifier(
        model,
        TensorSplit(imgs[:32], labels[:32], Split.TRAIN),
        TensorSplit(imgs[32:], labels[32:], Split.VAL_SELECT),
        p.train,
        progress=False,
        log=lambda _m: None,
    )
    assert all(torch.equal(t, frozen[n]) for n, t in model.named_parameters() if n in frozen)
    merged = merge_adapters(model)
    save_checkpoint(merged, p.model, tmp_path)
    again, _ = load_checkpoint(tmp_path, device="cpu")
    x = imgs[:4].float() / 255
    with torch.no_grad():
        assert torch.equal(again(x), merged.eval()(x))
