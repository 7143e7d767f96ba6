import numpy as np
import pytest
import torch
import torch.nn.functional as F

from roadwork_ml.config import load_profile
from roadwork_ml.models import build_classifier
from roadwork_ml.models.inference import multiview_model, predict_views
from roadwork_ml.models.multiview import MultiViewClassifier, ViewSpec, make_views, tile_boxes


@pytest.mark.parametrize("side", [64, 224, 672])
def test_tiles_cover_the_image_with_the_requested_overlap(side):
    boxes = tile_boxes(side, side, 3, 0.125)
    covered = np.zeros((side, side), bool)
    for t, l, h, w in boxes:
        assert t >= 0 and l >= 0 and t + h <= side and l + w <= side
        covered[t : t + h, l : l + w] = True
    assert covered.all()
    t0, t1 = boxes[0][1], boxes[1][1]
    overlap = (t0 + boxes[0][3] - t1) / boxes[0][3]
    assert overlap == pytest.approx(0.125, abs=2.5 / boxes[0][3])


def test_views_are_the_global_resize_and_crops():
    x = torch.rand(2, 3, 96, 96)
    spec = ViewSpec(size=32, flip=True)
    v = make_views(x, spec)
    assert v.shape == (2, 20, 3, 32, 32) and spec.n_views == 20
    assert torch.allclose(v[:, 0], F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False))
    t, l, h, w = tile_boxes(96, 96, 3, 0.125)[4]
    assert torch.allclose(
        v[:, 5],
        F.interpolate(x[:, :, t : t + h, l : l + w], size=(32, 32), mode="bilinear", align_corners=False),
        atol=1e-6,
    )
    assert torch.equal(v[:, 10:], v[:, :10].flip(-1))
    assert make_views(x, ViewSpec(size=32, multi=False)).shape == (2, 1, 3, 32, 32)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_classifier(load_profile("tiny").model).eval()


def test_batched_forward_equals_a_loop_over_views(model):
    size = model.backbone.patch_embed.img_size[0]
    mv = MultiViewClassifier(model, ViewSpec(size=size), "mean")
    x = torch.rand(3, 3, 2 * size, 2 * size)
    with torch.no_grad():
        agg, view_logits, emb = mv(x)
        views = make_views(x, mv.spec)
        loop = torch.stack([model(views[:, i]) for i in range(views.shape[1])], dim=1)
    assert torch.allclose(view_logits, loop, atol=1e-5)
    assert torch.allclose(agg.exp(), loop.softmax(-1).mean(1), atol=1e-6)
    assert emb.shape == (3, 10, model.embed_dim)


def test_topk_aggregates_the_most_roadwork_like_views(model):
    size = model.backbone.patch_embed.img_size[0]
    mv = MultiViewClassifier(model, ViewSpec(size=size), "topk", top_k=3)
    x = torch.rand(4, 3, 2 * size, 2 * size)
    with torch.no_grad():
        agg, view_logits, _ = mv(x)
    p = view_logits.softmax(-1)
    top = p[..., 1].topk(3, dim=1).values.mean(1)
    assert torch.allclose(agg.exp()[:, 1], top, atol=1e-6)
    assert torch.allclose(agg.exp().sum(1), torch.ones(4), atol=1e-5)


def test_predict_views_outputs_and_features(model):
    prof = load_profile("tiny")
    mv = multiview_model(model, prof.model, prof.inference.model_copy(update={"aggregator": "mean"}))
    images = (torch.rand(5, 3, prof.inference.input_size, prof.inference.input_size) * 255).to(torch.uint8)
    out = predict_views(mv, images, batch_size=2)
    assert out.logits.shape == (5, 2) and out.view_logits.shape == (5, 10, 2) and out.features.shape == (5, 7)
    probs = np.exp(out.logits)
    assert np.allclose(out.features[:, 0], probs.max(1), atol=1e-5)  # max_prob of the aggregate
    single = predict_views(
        multiview_model(model, prof.model, prof.inference, {"multi_view": False, "aggregator": "mean", "top_k": 1}),
        images,
        batch_size=5,
    )
    assert single.view_logits.shape == (5, 1, 2)
    assert np.all(single.features[:, [1, 3, 4, 5]] == 0)  # variance-type features vanish for one view
    # streamed through loader workers: the same outputs in the same order
    from roadwork_ml.config import LoaderConfig
    from roadwork_ml.contracts import Split
    from roadwork_ml.training.dataset import TensorImageDataset

    ds = TensorImageDataset(images, np.zeros(5, dtype=int), Split.VAL_CALIB)
    streamed = predict_views(mv, ds, batch_size=2, loader=LoaderConfig(num_workers=2))
    assert np.allclose(streamed.logits, out.logits, atol=1e-6) and np.allclose(
        streamed.features, out.features, atol=1e-6
    )


def test_global_aggregator_decides_with_the_global_view_and_keeps_tile_features(model):
    prof = load_profile("tiny")
    inf = prof.inference.model_copy(update={"aggregator": "global"})
    images = (torch.rand(4, 3, inf.input_size, inf.input_size) * 255).to(torch.uint8)
    out = predict_views(multiview_model(model, prof.model, inf), images, batch_size=4)
    global_probs = torch.from_numpy(out.view_logits[:, 0]).softmax(-1).numpy()
    assert np.allclose(np.exp(out.logits), global_probs, atol=1e-5)
    assert np.allclose(out.features[:, 0], global_probs.max(1), atol=1e-5)
    assert (out.features[:, 1] > 0).all()  # cross-view variance still measured over all 10 views


def test_attention_aggregator_weights_views_by_their_embeddings(model):
    from roadwork_ml.models.aggregator import AttentionAggregator, attention_widths

    size = model.backbone.patch_embed.img_size[0]
    att = AttentionAggregator(model.embed_dim).eval()
    mv = MultiViewClassifier(model, ViewSpec(size=size), "attention", attention=att)
    x = torch.rand(3, 3, 2 * size, 2 * size)
    with torch.no_grad():
        agg, view_logits, emb = mv(x)
        w = att(emb)
    assert torch.allclose(w.sum(1), torch.ones(3), atol=1e-6)
    assert torch.allclose(agg.exp(), (w.unsqueeze(-1) * view_logits.softmax(-1)).sum(1), atol=1e-6)
    assert attention_widths(1280) == (512, 128) and attention_widths(1024) == (410, 102)
    with pytest.raises(ValueError, match="trained attention module"):
        MultiViewClassifier(model, ViewSpec(size=size), "attention")
