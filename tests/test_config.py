import pytest
from pydantic import ValidationError

from roadwork_ml.config import PROFILE_DIR, load_profile, parse_overrides


@pytest.mark.parametrize("name", sorted(p.stem for p in PROFILE_DIR.glob("*.yaml")))
def test_every_shipped_profile_validates(name):
    profile = load_profile(name)
    assert profile.name == name
    assert abs(sum(profile.splits.ratios.values()) - 1) < 1e-9


def test_production_holds_the_seed_plan_numbers():
    p = load_profile("production")
    assert p.splits.ratios == {"train": 0.60, "val_select": 0.15, "val_calib": 0.15, "val_test": 0.10}
    assert (p.thresholds.target_fnr_exit, p.thresholds.min_coverage) == (0.02, 0.70)
    assert p.model.backbone == "vit_large_patch14_dinov2" and p.model.img_size == 224
    assert p.data.sources["natix"].synthetic.label_noise == 0.10


def test_demo_extends_production_and_overrides_apply():
    p = load_profile("demo", ["train.epochs=3", "splits.fusion=balanced", "model.weights_path=/x.safetensors"])
    assert (p.train.epochs, p.splits.fusion, p.model.weights_path) == (3, "balanced", "/x.safetensors")
    assert p.thresholds.grid_size != load_profile("production").thresholds.grid_size  # overridden
    assert p.policy.calibration.methods == load_profile("production").policy.calibration.methods  # inherited


def test_env_var_picks_profile(monkeypatch):
    monkeypatch.setenv("ROADWORK_PROFILE", "tiny")
    assert load_profile().name == "tiny"


@pytest.mark.parametrize(
    "override, message",
    [("train.epochz=3", "epochz"), ("splits.fusion=magic", "fusion"), ("train.lr=-1", "lr"), ("splits.ratios.train=0.9", "sum to 1")],
)
def test_bad_overrides_fail_loudly(override, message):
    with pytest.raises(ValidationError, match=message):
        load_profile("demo", [override])


def test_override_syntax_and_unknown_profile():
    assert parse_overrides(["a.b=1", "a.c=[1, 2]", "d=null"]) == {"a": {"b": 1, "c": [1, 2]}, "d": None}
    with pytest.raises(ValueError, match="section.key=value"):
        parse_overrides(["nonsense"])
    with pytest.raises(FileNotFoundError, match="demo"):
        load_profile("no-such-profile")


def test_profile_from_path_with_extends(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: {PROFILE_DIR / 'tiny.yaml'}\nname: mine\ntrain: {{epochs: 7}}\n")
    p = load_profile(str(path))
    assert (p.name, p.train.epochs, p.model.embed_dim) == ("mine", 7, 48)
