"""Checkpoint selection on the StreetVision reward (roadwork_ml.training.selection): the views are
the validator's draws at the served side, the score is the pooled reward at 0.5 (scikit-learn as
the oracle), and the trainer keeps and early-stops on it."""

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, matthews_corrcoef

from roadwork_ml.config import load_profile
from roadwork_ml.contracts import Split
from roadwork_ml.evaluation.report import resize_images
from roadwork_ml.evaluation.streetvision import augment
from roadwork_ml.models import build_classifier
from roadwork_ml.models.inference import global_view_probability
from roadwork_ml.training.selection import selection_rows, streetvision_views
from roadwork_ml.training.trainer import TensorSplit, train_classifier

SIZE = 16


def _images(n: int, seed: int, h: int = 60, w: int = 80) -> tuple[torch.Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, h, w, generator=g) * 255).to(torch.uint8)
    labels = torch.randint(0, 2, (n,), generator=g).numpy()
    for i in np.flatnonzero(labels):
        images[i, 0, h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 250
    return images, labels


def _batches(images: torch.Tensor, labels: np.ndarray, bs: int):
    return ((images[s : s + bs], labels[s : s + bs]) for s in range(0, len(labels), bs))


def _profile(**inference):
    p = load_profile("tiny", [f"model.img_size={SIZE}", "model.patch_size=4", "model.embed_dim=32", "model.depth=1"])
    inf = p.inference.model_copy(update={"input_size": 24, "batch_size": 5, "flip_tta": True, **inference})
    return p, inf


def test_views_are_the_validators_draws_at_the_served_side_whatever_the_batching():
    images, labels = _images(7, 0)
    views = streetvision_views(_batches(images, labels, 3), [0, 2], seed=5, input_size=24, size=32)
    assert views.views.shape == (14, 3, 24, 24) and views.views.dtype == torch.uint8
    for i, lv in enumerate((0, 2)):  # level-major rows, each the validator's draw of (seed, image index)
        expected = resize_images(augment(images, lv, 5, size=32), 24)
        assert torch.equal(views.views[i * 7 : (i + 1) * 7], expected)
    np.testing.assert_array_equal(views.labels, np.tile(labels, 2))
    again = streetvision_views(_batches(images, labels, 7), [0, 2], seed=5, input_size=24, size=32)
    assert torch.equal(again.views, views.views)
    other = streetvision_views(_batches(images, labels, 7), [2], seed=6, input_size=24, size=32)
    assert not torch.equal(other.views, views.views[7:])


def test_a_served_input_larger_than_the_validators_keeps_the_draws_and_resizes_when_scoring():
    p, inf = _profile(input_size=40)
    torch.manual_seed(0)
    model = build_classifier(p.model).eval()
    images, labels = _images(5, 3)
    views = streetvision_views(_batches(images, labels, 2), [0, 3], seed=4, input_size=40, size=32)
    assert views.views.shape == (10, 3, 32, 32)  # 40-px copies would only be the 32-px draws upsampled
    drawn = torch.cat([augment(images, lv, 4, size=32) for lv in (0, 3)])
    served = global_view_probability(model, p.model, inf)  # resizes 32 -> 40 itself
    np.testing.assert_allclose(views.outputs(model, p.model, inf), served(drawn), atol=1e-6)


def test_a_capped_selection_draws_its_images_across_the_split_not_its_head():
    import pandas as pd

    rows = pd.DataFrame({"record_id": [f"r{i:03d}" for i in range(200)]})
    sel = load_profile("tiny").train.selection
    capped = selection_rows(rows, sel.model_copy(update={"max_images": 50}))
    assert len(capped) == 50 and capped.index.is_monotonic_increasing and capped.index.max() > 100
    again = selection_rows(rows, sel.model_copy(update={"max_images": 50}))
    assert capped.index.equals(again.index)
    assert selection_rows(rows, sel) is rows


def test_no_images_or_no_levels_is_a_clear_error():
    with pytest.raises(ValueError, match="no images"):
        streetvision_views(iter(()), [0], seed=0, input_size=24)
    images, labels = _images(2, 0)
    with pytest.raises(ValueError, match="at least one level"):
        streetvision_views(_batches(images, labels, 2), [], seed=0, input_size=24)


def test_score_is_the_pooled_reward_at_half_of_the_served_global_view():
    p, inf = _profile()
    torch.manual_seed(0)
    model = build_classifier(p.model).eval()
    images, labels = _images(9, 1)
    views = streetvision_views(_batches(images, labels, 4), [0, 1, 3], seed=2, input_size=24, size=32)
    out = views.outputs(model, p.model, inf)
    served = global_view_probability(model, p.model, inf)  # the benches' served path, from the 32-px draws
    drawn = torch.cat([augment(images, lv, 2, size=32) for lv in (0, 1, 3)])
    np.testing.assert_allclose(out, served(drawn), atol=1e-6)

    score = views.score(model, p.model, inf)
    y, d = views.labels, (out > 0.5).astype(int)
    mcc, acc = matthews_corrcoef(y, d), accuracy_score(y, d)
    assert score["mcc"] == pytest.approx(mcc, abs=1e-12)
    assert score["accuracy"] == pytest.approx(acc, abs=1e-12)
    assert score["reward"] == pytest.approx((0.5 * mcc + 0.5 * acc) ** 3, abs=1e-12)
    for i, lv in enumerate((0, 1, 3)):
        rows = slice(i * 9, (i + 1) * 9)
        assert score[f"mcc_level_{lv}"] == pytest.approx(matthews_corrcoef(y[rows], d[rows]), abs=1e-12)
    assert views.scorer(p.model, inf)(model) == score["reward"]


def test_scoring_leaves_a_training_model_in_training_mode():
    p, inf = _profile()
    model = build_classifier(p.model).train()
    images, labels = _images(3, 2)
    streetvision_views(_batches(images, labels, 3), [0], seed=0, input_size=24, size=32).score(model, p.model, inf)
    assert model.training


# --------------------------------------------------------------------------- the trainer


def _split(n: int, seed: int, split: str) -> TensorSplit:
    g = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, SIZE, SIZE, generator=g) * 80).to(torch.uint8)
    labels = torch.randint(0, 2, (n,), generator=g)
    for i in torch.nonzero(labels).flatten().tolist():
        images[i, 0, 4:10, 4:10] = 250
    return TensorSplit(images, labels, Split(split))


def _train_cfg(p, metric: str, patience: int = 10):
    return p.train.model_copy(
        update={
            "epochs": 5,
            "batch_size": 32,
            "lr": 3e-3,
            "augment": False,
            "num_threads": 0,
            "early_stopping_patience": patience,
            "selection": p.train.selection.model_copy(update={"metric": metric}),
        }
    )


class _Scripted:
    """A select_score that returns a fixed score per epoch and keeps the weights it saw."""

    def __init__(self, scores):
        self.scores, self.states = list(scores), []

    def __call__(self, model) -> float:
        self.states.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return self.scores[len(self.states) - 1]


def _fit(metric: str, scorer, patience: int = 10):
    p, _ = _profile()
    torch.manual_seed(0)
    model = build_classifier(p.model)
    res = train_classifier(
        model,
        _split(256, 0, "train"),
        _split(128, 1, "val_select"),
        _train_cfg(p, metric, patience),
        select_score=scorer,
        progress=False,
        log=lambda s: None,
    )
    return model, res


def test_the_trainer_keeps_the_epoch_the_selection_score_ranks_first():
    scorer = _Scripted([0.2, 0.9, 0.3, 0.4, 0.5])
    model, res = _fit("streetvision_reward", scorer)
    assert res.best_epoch == 2 and res.best_score == 0.9
    assert res.best_mcc == res.history[1].val_mcc
    assert [h.select_score for h in res.history] == scorer.scores
    for k, v in model.state_dict().items():
        assert torch.equal(v, scorer.states[1][k].to(v.dtype)), k


def test_val_mcc_selection_ignores_the_score_so_the_knob_is_what_moves_the_checkpoint():
    scorer = _Scripted([0.2, 0.9, 0.3, 0.4, 0.5])
    _, res = _fit("val_mcc", scorer)
    assert scorer.states == [] and res.history[0].select_score is None
    mccs = [h.val_mcc for h in res.history]
    assert res.best_epoch == 1 + int(np.argmax(mccs)) and res.best_score == max(mccs)
    assert res.best_epoch != 2  # this problem's MCC peaks late; the scripted score would have kept epoch 2


def test_early_stopping_counts_epochs_without_a_better_selection_score():
    _, res = _fit("streetvision_reward", _Scripted([0.5, 0.4, 0.3, 0.9, 0.9]), patience=2)
    assert res.stopped_early and len(res.history) == 3 and res.best_epoch == 1


def test_a_reward_selection_without_its_scorer_is_refused():
    with pytest.raises(ValueError, match="select_score"):
        _fit("streetvision_reward", None)
