"""Channels-last inference (``inference.channels_last``): the same outputs as the default layout,
the model back in the default layout afterwards (state dicts and ONNX export see the usual
tensors), nested blocks leave the layout to the outermost one."""

import torch

from roadwork_ml.config import load_profile
from roadwork_ml.models import build_classifier
from roadwork_ml.models.device import memory_layout
from roadwork_ml.models.inference import predict_views, view_spec
from roadwork_ml.models.multiview import MultiViewClassifier


def _convnet():
    p = load_profile("demo", ["model.img_size=32"])
    torch.manual_seed(0)
    model = build_classifier(p.model).eval()
    spec = view_spec(p.model, p.inference.model_copy(update={"grid": 2}), multi_view=True)
    return MultiViewClassifier(model, spec, "mean").eval()


def _conv_weights(module):
    return [p for p in module.parameters() if p.dim() == 4 and p.shape[2] * p.shape[3] > 1]


def test_channels_last_views_equal_the_default_layout_and_the_layout_is_restored():
    mv = _convnet()
    images = torch.randint(0, 256, (6, 3, 48, 48), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    plain = predict_views(mv, images, 4, keep_view_embeddings=True, channels_last=False)
    fast = predict_views(mv, images, 4, keep_view_embeddings=True, channels_last=True)
    assert plain.view_logits.shape == (6, mv.spec.n_views, 2)
    torch.testing.assert_close(
        torch.from_numpy(fast.view_logits), torch.from_numpy(plain.view_logits), rtol=1e-4, atol=1e-4
    )
    torch.testing.assert_close(
        torch.from_numpy(fast.view_embeddings), torch.from_numpy(plain.view_embeddings), rtol=1e-4, atol=1e-4
    )
    convs = _conv_weights(mv)
    assert convs and all(w.is_contiguous() for w in convs)


def test_inside_the_block_the_weights_are_channels_last_and_nested_blocks_keep_it():
    mv = _convnet()
    conv = _conv_weights(mv)[0]
    with memory_layout(mv, True):
        assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
        with memory_layout(mv, True):
            pass
        assert not conv.is_contiguous()  # the inner block did not restore the default layout
    assert conv.is_contiguous()
    with memory_layout(mv, False):
        assert conv.is_contiguous()
    # a model without spatial convolutions passes through unchanged
    linear = torch.nn.Sequential(torch.nn.Linear(4, 2))
    with memory_layout(linear, True) as same:
        assert same is linear
