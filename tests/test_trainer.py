"""The trainer on a small problem a ViT can learn in seconds: a bright square means positive."""

import numpy as np
import pytest
import torch
from sklearn.metrics import matthews_corrcoef

from roadwork_ml.config import load_profile
from roadwork_ml.contracts import LeakageError, Split
from roadwork_ml.models import build_classifier
from roadwork_ml.training.checkpoint import load_checkpoint, save_checkpoint
from roadwork_ml.training.schedule import warmup_cosine
from roadwork_ml.training.trainer import TensorSplit, evaluate, predict_logits, train_classifier

SIZE = 16


def _data(n, seed, split):
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, SIZE, SIZE, generator=g) * 80).to(torch.uint8)
    labels = torch.randint(0, 2, (n,), generator=g)
    for i in torch.nonzero(labels).flatten().tolist():
        r, c = torch.randint(0, SIZE - 6, (2,), generator=g).tolist()
        images[i, 0, r : r + 6, c : c + 6] = 250
        images[i, 1, r : r + 6, c : c + 6] = 140
    return TensorSplit(images, labels, Split(split))


def _cfgs(**train):
    p = load_profile("tiny", [f"model.img_size={SIZE}", "model.patch_size=4", "model.embed_dim=32", "model.depth=1"])
    t = p.train.model_copy(
        update={
            "epochs": 6,
            "batch_size": 32,
            "lr": 3e-3,
            "augment": False,
            "num_threads": 0,
            "early_stopping_patience": 10,
            **train,
        }
    )
    return p.model, t


@pytest.fixture(scope="module")
def trained():
    mcfg, tcfg = _cfgs()
    torch.manual_seed(0)
    model = build_classifier(mcfg)
    train, val = _data(512, 0, "train"), _data(256, 1, "val_select")
    result = train_classifier(model, train, val, tcfg, progress=False, log=lambda s: None)
    return model, mcfg, result, val


def test_learns_and_keeps_the_best_epoch(trained):
    model, _, result, val = trained
    assert result.best_mcc > 0.9
    preds = predict_logits(model, val.images, 64).argmax(1).numpy()
    assert matthews_corrcoef(val.labels.numpy(), preds) == pytest.approx(result.best_mcc, abs=1e-9)
    assert result.history[0].train_loss > result.history[-1].train_loss
    assert len(result.step_losses) == 6 * 16


def test_checkpoint_reload_is_bit_identical_and_tamper_is_caught(trained, tmp_path):
    model, mcfg, _, val = trained
    save_checkpoint(model, mcfg, tmp_path)
    again, meta = load_checkpoint(tmp_path)
    a = predict_logits(model, val.images, 64)
    b = predict_logits(again, val.images, 64)
    assert torch.equal(a, b)
    blob = bytearray((tmp_path / "model.safetensors").read_bytes())
    blob[-1] ^= 1
    (tmp_path / "model.safetensors").write_bytes(bytes(blob))
    with pytest.raises(Exception, match="sha256"):
        load_checkpoint(tmp_path)


def test_early_stopping_stops():
    mcfg, tcfg = _cfgs(epochs=20, early_stopping_patience=2, lr=1e-9)  # nothing to learn at lr 1e-9
    result = train_classifier(
        build_classifier(mcfg),
        _data(64, 2, "train"),
        _data(64, 3, "val_select"),
        tcfg,
        progress=False,
        log=lambda s: None,
    )
    assert result.stopped_early and len(result.history) < 20


def test_gradient_accumulation_matches_a_bigger_batch():
    torch.manual_seed(0)
    mcfg, _ = _cfgs()
    base = build_classifier(mcfg.model_copy(update={"head_dropout": 0.0}))
    train, val = _data(64, 4, "train"), _data(32, 5, "val_select")
    models = []
    for bs, acc in ((16, 1), (8, 2)):
        m = build_classifier(mcfg)
        m.load_state_dict(base.state_dict())
        _, t = _cfgs(epochs=1, batch_size=bs, grad_accum_steps=acc, seed=3)
        train_classifier(m, train, val, t, progress=False, log=lambda s: None)
        models.append(m)
    # The sample order is the same permutation, so 2 accumulated batches of 8 give the gradient
    # of 1 batch of 16. Adam's first steps are sign-like (g / |g|), so float noise in near-zero
    # gradients can flip a few updates by 2·lr; everything else must agree to float precision.
    a = torch.cat([p.flatten() for p in models[0].state_dict().values()])
    b = torch.cat([p.flatten() for p in models[1].state_dict().values()])
    close = torch.isclose(a, b, atol=1e-5)
    assert close.float().mean() > 0.99
    assert (a - b).abs().max() <= 2 * 3e-3 * 4 + 1e-6


def test_leakage_contract_guards_training():
    mcfg, tcfg = _cfgs(epochs=1)
    model = build_classifier(mcfg)
    with pytest.raises(LeakageError):
        train_classifier(model, _data(16, 0, "val_calib"), _data(16, 1, "val_select"), tcfg, progress=False)
    with pytest.raises(LeakageError):
        train_classifier(model, _data(16, 0, "train"), _data(16, 1, "val_test"), tcfg, progress=False)
    with pytest.raises(LeakageError):
        evaluate(model, _data(16, 1, "val_test"), 8)


def test_warmup_cosine_shape():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_cosine(opt, total_steps=100, warmup_steps=10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) <= 1e-12)
    assert lrs[-1] == pytest.approx(0.01, abs=0.01)


@pytest.mark.parametrize(("saturation_prob", "grey"), [(0.0, False), (1.0, True)])
def test_the_profiles_saturation_knobs_reach_the_training_batches(saturation_prob, grey):
    mcfg, tcfg = _cfgs(epochs=1, augment=True)
    aug = tcfg.augmentation.model_copy(
        update={
            "policy": "legacy",
            "saturation_prob": saturation_prob,
            "saturation_range": (0.0, 0.0),
            "noise_prob": 0.0,  # the noise step adds colour back
        }
    )
    tcfg = tcfg.model_copy(update={"augmentation": aug})
    model = build_classifier(mcfg)
    chroma = []

    def record(module, args):
        if module.training:
            x = args[0]
            chroma.append(float((x.amax(dim=1) - x.amin(dim=1)).max()))

    model.register_forward_pre_hook(record)
    train_classifier(model, _data(64, 4, "train"), _data(32, 5, "val_select"), tcfg, progress=False, log=lambda s: None)
    assert len(chroma) == 2  # 64 images, batch 32
    if grey:
        assert max(chroma) < 1e-5  # every training image lost its colour
    else:
        assert min(chroma) > 0.3  # the orange patches keep theirs


def test_source_side_feeds_the_model_its_input_size_from_larger_images():
    """train.augmentation.source_side: TRAIN images cached at 2x the input; the batch step samples
    them and the model still gets img_size inputs; VAL_SELECT is scored at img_size."""
    from roadwork_ml.training.dataset import TensorImageDataset
    from roadwork_ml.training.trainer import train_cache_side

    mcfg, tcfg = _cfgs(epochs=1, augment=True)
    aug = tcfg.augmentation.model_copy(update={"policy": "legacy", "source_side": 2 * SIZE})
    tcfg = tcfg.model_copy(update={"augmentation": aug})
    assert train_cache_side(mcfg, tcfg) == 2 * SIZE
    assert train_cache_side(mcfg, tcfg.model_copy(update={"augment": False})) is None
    big = _data(64, 4, "train")
    images = torch.nn.functional.interpolate(big.images.float(), size=(2 * SIZE, 2 * SIZE)).to(torch.uint8)
    train = TensorImageDataset(images, big.labels, Split.TRAIN, size=SIZE)
    model = build_classifier(mcfg)
    shapes = []
    model.register_forward_pre_hook(lambda m, args: shapes.append((m.training, tuple(args[0].shape[-2:]))))
    train_classifier(model, train, _data(32, 5, "val_select"), tcfg, progress=False, log=lambda s: None)
    assert {s for t, s in shapes if t} == {(SIZE, SIZE)} and {s for t, s in shapes if not t} == {(SIZE, SIZE)}
    assert train.size == SIZE  # the caller's dataset is untouched


def _views_cfg(views: int, weight: float, augment: bool):
    mcfg, tcfg = _cfgs(epochs=2, augment=augment)
    aug = tcfg.augmentation.model_copy(update={"policy": "legacy"})
    cons = tcfg.consistency.model_copy(update={"views": views, "weight": weight})
    return mcfg, tcfg.model_copy(update={"augmentation": aug, "consistency": cons})


def _train_recording(mcfg, tcfg, n=64):
    torch.manual_seed(0)
    model = build_classifier(mcfg)
    batches = []
    model.register_forward_pre_hook(lambda m, args: batches.append(args[0].detach().clone()) if m.training else None)
    result = train_classifier(
        model, _data(n, 4, "train"), _data(32, 5, "val_select"), tcfg, progress=False, log=lambda s: None
    )
    return batches, result


def test_consistency_views_hold_each_image_twice_at_the_cost_of_one_view():
    """train.consistency.views=2 with batch 32: each step sees 16 images twice (row i*16+j is view
    i of image j), an epoch takes as many steps as one view does and draws half the TRAIN images."""
    mcfg, tcfg = _views_cfg(2, 0.0, augment=False)
    batches, result = _train_recording(mcfg, tcfg)
    assert len(batches) == 4 and len(result.step_losses) == 4  # 2 epochs x (64 images / 32), as with one view
    for x in batches:
        assert x.shape[0] == 32
        assert torch.equal(x[:16], x[16:])  # no augmentation: the views are the same image
    first_epoch = torch.cat([b[:16] for b in batches[:2]]).flatten(1)
    assert torch.unique(first_epoch, dim=0).shape[0] == 32  # 32 distinct images of 64 per epoch

    _, tcfg_aug = _views_cfg(2, 0.0, augment=True)
    augmented, _ = _train_recording(mcfg, tcfg_aug)
    assert all((x[:16] - x[16:]).abs().amax(dim=(1, 2, 3)).min() > 0 for x in augmented)  # drawn apart


def test_consistency_weight_adds_the_views_divergence_to_the_loss():
    mcfg, same = _views_cfg(2, 0.0, augment=False)
    _, same_js = _views_cfg(2, 12.0, augment=False)
    # identical views: the Jensen-Shannon term is 0 and training is unchanged
    assert _train_recording(mcfg, same)[1].step_losses == pytest.approx(_train_recording(mcfg, same_js)[1].step_losses)
    _, aug = _views_cfg(2, 0.0, augment=True)
    _, aug_js = _views_cfg(2, 12.0, augment=True)
    plain, with_js = _train_recording(mcfg, aug)[1].step_losses, _train_recording(mcfg, aug_js)[1].step_losses
    assert with_js[0] > plain[0]  # same first batch and weights: the divergence of its augmented views is added


def test_consistency_views_must_divide_the_batch_and_need_the_batch_augmentation():
    from roadwork_ml.config import ProfileError

    with pytest.raises(ProfileError, match="not a multiple"):
        load_profile("tiny", ["train.batch_size=33", "train.consistency.views=2"])
    with pytest.raises(ProfileError, match="its views would be copies"):
        load_profile("tiny", ["train.augmentation.policy=validator", "train.consistency.views=2"])
    cfg = load_profile(
        "tiny",
        [
            "train.augmentation.policy=validator",
            "train.augmentation.legacy_on_top=true",
            "train.augmentation.lost_object_weight=1",
            "train.consistency.views=2",
        ],
    )
    assert cfg.train.consistency.views == 2


def test_channels_last_training_returns_a_model_in_the_default_layout(tmp_path):
    """train.channels_last: the batches reach the model channels-last, and the returned model
    (and its checkpoint, safetensors needs contiguous tensors) is in the default layout again."""
    mcfg, tcfg = _cfgs(epochs=1)
    assert tcfg.channels_last
    model = build_classifier(mcfg)
    layouts = []
    model.register_forward_pre_hook(
        lambda m, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last)) if m.training else None
    )
    train_classifier(model, _data(64, 4, "train"), _data(32, 5, "val_select"), tcfg, progress=False, log=lambda s: None)
    assert layouts and all(layouts)
    assert all(p.is_contiguous() for p in model.parameters())
    assert any(p.ndim == 4 for p in model.parameters())  # the patch embedding's convolution was converted
    save_checkpoint(model, mcfg, tmp_path / "ckpt")
    reloaded, _ = load_checkpoint(tmp_path / "ckpt")
    x = _data(8, 6, "val_select").images
    assert torch.equal(predict_logits(model, x, 8), predict_logits(reloaded, x, 8))


def _lost_cfg(weight: float, epochs: int = 6):
    mcfg, tcfg = _cfgs(epochs=epochs, augment=True)
    aug = tcfg.augmentation.model_copy(
        update={"policy": "legacy", "geometry_prob": 1.0, "lost_object_weight": weight, "saturation_prob": 0.0}
    )
    return mcfg, tcfg.model_copy(update={"augmentation": aug})


def _boxes_of(split: TensorSplit, side: float | None) -> torch.Tensor:
    """[N, 1, 4]: each positive's bright square (``side`` None) or a speck of ``side`` at its corner."""
    boxes = torch.full((len(split.labels), 1, 4), float("nan"))
    for i in torch.nonzero(split.labels).flatten().tolist():
        rows, cols = torch.nonzero(split.images[i, 0] == 250, as_tuple=True)
        v0, u0 = rows.min().item() / SIZE, cols.min().item() / SIZE
        u1, v1 = (cols.max().item() + 1) / SIZE, (rows.max().item() + 1) / SIZE
        boxes[i, 0] = torch.tensor([u0, v0, u1, v1] if side is None else [u0, v0, u0 + side, v0 + side])
    return boxes


def test_lost_object_weight_takes_the_positives_out_of_the_loss_when_their_boxes_leave_the_frame():
    """Boxes too small to stay visible under any zoom or rotation: with weight 0 no positive reaches the loss and
    the model learns to call nothing roadwork; with weight 1 (off) the same run learns the squares.
    With the squares' own boxes, weight 0 drops only the crops that cut them out and still learns."""
    train, val = _data(512, 0, "train"), _data(256, 1, "val_select")

    def fit(weight, boxes):
        mcfg, tcfg = _lost_cfg(weight)
        torch.manual_seed(0)
        model = build_classifier(mcfg)
        return train_classifier(model, train, val, tcfg, progress=False, log=lambda s: None, object_boxes=boxes)

    negatives = 1 - val.labels.float().mean().item()
    specks = _boxes_of(train, side=0.001)
    off = fit(1.0, specks)
    assert off.best_mcc > 0.6
    lost = fit(0.0, specks)
    # no positive ever weighed in: after the first epoch every VAL_SELECT image is "no roadwork"
    for epoch in lost.history[1:]:
        assert abs(epoch.val_mcc) < 0.05 and epoch.val_accuracy == pytest.approx(negatives, abs=0.01)
    assert fit(0.0, _boxes_of(train, side=None)).best_mcc > 0.6


def test_lost_object_weights_touch_only_positives_with_known_boxes_out_of_the_frame():
    from roadwork_ml.training.trainer import _lost_object_weights

    _, tcfg = _lost_cfg(0.25, epochs=1)
    quarter = torch.tensor([[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]])  # the top-left quarter of the image
    frames = quarter.expand(5, 2, 3)
    nan = [float("nan")] * 4
    boxes = torch.tensor([[[0.6, 0.6, 0.9, 0.9]], [[0.1, 0.1, 0.3, 0.3]], [[0.6, 0.6, 0.9, 0.9]], [nan], [nan]])
    known = torch.tensor([True, True, True, False, False])
    y = torch.tensor([1, 1, 0, 1, 0])  # lost positive, kept positive, negative, unknown positive, unknown negative
    w = _lost_object_weights(frames, y, torch.arange(5), boxes, known, None, tcfg)
    assert w.tolist() == [0.25, 1.0, 1.0, 1.0, 1.0]
    hard = torch.tensor([2.0, 3.0, 4.0, 5.0, 6.0])  # hard-negative weights are multiplied, not replaced
    assert _lost_object_weights(frames, y, torch.arange(5), boxes, known, hard, tcfg).tolist() == [0.5, 3, 4, 5, 6]


def test_lost_object_weight_needs_the_batch_step():
    from roadwork_ml.config import ProfileError

    with pytest.raises(ProfileError, match="lost_object_weight < 1 needs augmentation.policy legacy"):
        load_profile("tiny", ["train.augmentation.policy=validator", "train.augmentation.lost_object_weight=0"])


def test_zoomed_weights_touch_only_samples_whose_frame_shows_little_of_the_image():
    from roadwork_ml.training.trainer import _zoomed_weights

    _, tcfg = _lost_cfg(1.0, epochs=1)

    def weights(negative, positive, w=None):
        update = {"zoomed_negative_weight": negative, "zoomed_positive_weight": positive, "zoomed_area_max": 0.5}
        cfg = tcfg.model_copy(update={"augmentation": tcfg.augmentation.model_copy(update=update)})
        return _zoomed_weights(frames, y, w, cfg).tolist()

    c, s = np.cos(0.3), np.sin(0.3)
    frames = torch.tensor(
        [
            [[0.5, 0.0, -0.5], [0.0, 0.5, -0.5]],  # a quarter of the image: zoomed
            [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # the whole image, flipped
            [[0.7 * c, 0.7 * s, 0.1], [-0.7 * s, 0.7 * c, 0.0]],  # rotated, side 0.7: 0.49 of the area
            [[0.72, 0.0, 0.0], [0.0, 0.72, 0.0]],  # 0.518 of the area: not zoomed
            [[0.5, 0.0, 0.0], [0.0, 0.5, 0.0]],  # zoomed, a positive
            [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]],  # the whole image, a positive
        ]
    )
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    assert weights(3.0, 1.0) == [3.0, 1.0, 3.0, 1.0, 1.0, 1.0]
    assert weights(1.0, 2.5) == [1.0, 1.0, 1.0, 1.0, 2.5, 1.0]
    assert weights(3.0, 2.5) == [3.0, 1.0, 3.0, 1.0, 2.5, 1.0]
    w = torch.tensor([2.0, 2.0, 0.5, 1.0, 0.0, 4.0])  # other weights (hard negatives, lost objects) are multiplied
    assert weights(3.0, 2.5, w) == [6.0, 2.0, 1.5, 1.0, 0.0, 4.0]


def test_zoomed_weights_reach_the_loss():
    """Every frame counts as zoomed (area max 1). Negatives at weight 0: none reaches the loss, so
    the model calls every VAL_SELECT image roadwork; positives at weight 0: it calls none. At
    weight 1 (off) the same run learns."""
    train, val = _data(512, 0, "train"), _data(256, 1, "val_select")

    def fit(negative, positive):
        mcfg, tcfg = _lost_cfg(1.0, epochs=3)
        update = {"zoomed_negative_weight": negative, "zoomed_positive_weight": positive, "zoomed_area_max": 1.0}
        torch.manual_seed(0)
        model = build_classifier(mcfg)
        cfg = tcfg.model_copy(update={"augmentation": tcfg.augmentation.model_copy(update=update)})
        return train_classifier(model, train, val, cfg, progress=False, log=lambda s: None)

    positives = val.labels.float().mean().item()
    assert fit(1.0, 1.0).best_mcc > 0.6
    for epoch in fit(0.0, 1.0).history[1:]:
        assert abs(epoch.val_mcc) < 0.05 and epoch.val_accuracy == pytest.approx(positives, abs=0.01)
    for epoch in fit(1.0, 0.0).history[1:]:
        assert abs(epoch.val_mcc) < 0.05 and epoch.val_accuracy == pytest.approx(1 - positives, abs=0.01)


@pytest.mark.parametrize("cls", ["negative", "positive"])
def test_zoomed_weights_need_the_batch_step(cls):
    from roadwork_ml.config import ProfileError

    with pytest.raises(ProfileError, match=f"zoomed_{cls}_weight needs augmentation.policy legacy"):
        load_profile(
            "tiny",
            [
                "train.augmentation.policy=validator",
                "train.augmentation.lost_object_weight=1",
                f"train.augmentation.zoomed_{cls}_weight=2",
            ],
        )
