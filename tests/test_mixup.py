"""Mixup: the mixed batch, the mixed loss against timm's soft-target cross-entropy, the Beta draw
against scipy, and the trainer's use of it."""

import numpy as np
import pytest
import torch
from scipy import stats
from timm.data.mixup import mixup_target
from timm.loss import SoftTargetCrossEntropy

from roadwork_ml.config import MixupConfig, ProfileError, load_profile
from roadwork_ml.models import build_classifier
from roadwork_ml.training.losses import build_loss
from roadwork_ml.training.mixup import mix_batch
from roadwork_ml.training.trainer import train_classifier
from tests.test_trainer import _cfgs, _data


def _batch(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 8, 8, generator=g), torch.randint(0, 2, (n,), generator=g)


def test_off_returns_the_batch_and_leaves_the_generator_alone():
    x, _ = _batch()
    gen = torch.Generator().manual_seed(5)
    state = gen.get_state()
    out = mix_batch(x, MixupConfig(alpha=0.0), gen)
    assert out.x is x and out.lam == 1.0 and torch.equal(out.perm, torch.arange(32))
    assert torch.equal(gen.get_state(), state)  # a profile without mixup draws exactly as before
    never = [mix_batch(x, MixupConfig(alpha=0.4, prob=0.0), gen).lam for _ in range(50)]
    assert never == [1.0] * 50


def test_rows_are_the_convex_mixture_of_a_permutation():
    x, _ = _batch()
    out = mix_batch(x, MixupConfig(alpha=0.4), torch.Generator().manual_seed(1))
    assert 0.0 < out.lam < 1.0
    assert sorted(out.perm.tolist()) == list(range(32)) and not torch.equal(out.perm, torch.arange(32))
    torch.testing.assert_close(out.x, out.lam * x + (1 - out.lam) * x[out.perm])


def test_mixed_cross_entropy_equals_timms_soft_target_loss():
    """For cross-entropy the mixture of the two losses is the loss against the mixed one-hot target
    (timm's mixup_target with a permuted partner, scored by timm's SoftTargetCrossEntropy)."""
    x, y = _batch()
    out = mix_batch(x, MixupConfig(alpha=0.4), torch.Generator().manual_seed(2))
    logits = torch.randn(32, 2, generator=torch.Generator().manual_seed(3))
    ce = build_loss(load_profile("tiny").train.loss, 0.0, y.numpy())
    mine = out.loss(ce, logits, y, None)
    onehot = mixup_target(y, 2, lam=1.0)
    target = out.lam * onehot + (1 - out.lam) * onehot[out.perm]
    torch.testing.assert_close(mine, SoftTargetCrossEntropy()(logits, target))
    # per-sample weights follow their rows: weight 0 on a row takes its own term out, not its partner's
    w = torch.ones(32)
    w[0] = 0.0
    weighted = out.loss(ce, logits, y, w)
    rows_a = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    rows_b = torch.nn.functional.cross_entropy(logits, y[out.perm], reduction="none")
    expect = out.lam * (rows_a * w).sum() / w.sum() + (1 - out.lam) * (rows_b * w[out.perm]).sum() / w[out.perm].sum()
    torch.testing.assert_close(weighted, expect)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_the_mixing_weight_is_beta_distributed(alpha):
    """2,000 draws against scipy's Beta(alpha, alpha) (Kolmogorov-Smirnov); a uniform weight fails
    the same test at alpha 0.2, and the test is sized to see it."""
    gen = torch.Generator().manual_seed(7)
    x, _ = _batch(4)
    lams = np.array([mix_batch(x, MixupConfig(alpha=alpha), gen).lam for _ in range(2000)])
    assert stats.kstest(lams, stats.beta(alpha, alpha).cdf).pvalue > 0.01
    uniform = np.random.default_rng(0).uniform(size=2000)
    assert (stats.kstest(uniform, stats.beta(alpha, alpha).cdf).pvalue < 0.01) == (alpha != 1.0)


def test_the_trainer_feeds_the_model_mixed_batches():
    """With train.mixup the training batches are convex mixtures of two images, the loss is the
    mixed one, and the run still learns the bright squares."""
    mcfg, plain = _cfgs(epochs=4)
    # Beta(50, 50): every batch's weight is near 0.5, so only a permutation's fixed points (about 1 in 32)
    # leave a row at a stored image
    mixed_cfg = plain.model_copy(update={"mixup": MixupConfig(alpha=50.0)})
    train, val = _data(256, 0, "train"), _data(128, 1, "val_select")
    stored = train.images.float().div(255).flatten(1)

    def fit(tcfg):
        torch.manual_seed(0)
        model = build_classifier(mcfg)
        seen = []
        model.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()) if m.training else None)
        return train_classifier(model, train, val, tcfg, progress=False, log=lambda s: None), torch.cat(seen)

    def nearest_stored(rows):  # per row: the distance to the closest stored TRAIN image
        return torch.cdist(rows.flatten(1).float(), stored, compute_mode="donot_use_mm_for_euclid_dist").amin(1)

    base, plain_rows = fit(plain)
    mixed, mixed_rows = fit(mixed_cfg)
    assert mixed.best_mcc > 0.8
    assert mixed.step_losses != base.step_losses
    assert nearest_stored(plain_rows).max() < 1e-4  # unmixed and unaugmented: each row is a stored image
    assert (nearest_stored(mixed_rows) < 1e-4).float().mean() < 0.1


def test_mixup_refuses_consistency_views():
    with pytest.raises(ProfileError, match="train.mixup needs train.consistency.views 1"):
        load_profile("tiny", ["train.mixup.alpha=0.2", "train.consistency.views=2"])
