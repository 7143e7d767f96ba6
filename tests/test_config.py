import pytest

from roadwork_ml.config import PROFILE_DIR, ProfileError, load_profile, parse_overrides


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
    [
        ("train.epochz=3", "epochz"),
        ("splits.fusion=magic", "fusion"),
        ("train.lr=-1", "lr"),
        ("splits.ratios.train=0.9", "sum to 1"),
    ],
)
def test_bad_overrides_fail_loudly(override, message):
    with pytest.raises(ProfileError, match=message):
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


def _bad_profile(tmp_path, body: str):
    path = tmp_path / "bad.yaml"
    path.write_text(f"extends: {PROFILE_DIR / 'tiny.yaml'}\nname: bad\n" + body)
    return path


def test_a_bad_profile_gives_one_line_per_problem_with_the_allowed_values_and_closest_key(tmp_path):
    path = _bad_profile(
        tmp_path, "train: {epohcs: 3}\nsplits: {fusion: balancd}\ndata: {sources: {natx: {kind: synthetic}}}\n"
    )
    with pytest.raises(ProfileError) as info:
        load_profile(str(path))
    err = info.value
    assert str(path) in str(err).splitlines()[0] and len(err.problems) == 3
    by_key = {p.split(":", 1)[0]: p for p in err.problems}
    assert (
        "did you mean 'epochs'?" in by_key["train.epohcs"]
        and "allowed in train:" in by_key["train.epohcs"]
        and "batch_size" in by_key["train.epohcs"]
    )
    assert (
        "'balancd' is not allowed" in by_key["splits.fusion"]
        and "domain_stratified" in by_key["splits.fusion"]
        and "did you mean 'balanced'?" in by_key["splits.fusion"]
    )
    assert "did you mean 'natix'?" in by_key["data.sources.natx"]
    assert err.validation_error.error_count() == 3  # the pydantic detail stays available
    # a key far from every valid one gets the allowed list but no guess
    with pytest.raises(ProfileError) as info:
        load_profile(str(_bad_profile(tmp_path, "train: {zzzzzz: 1}\n")))
    assert "did you mean" not in str(info.value) and "allowed in train:" in str(info.value)


def test_yaml_syntax_errors_and_unknown_names_are_profile_errors(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ntrain: {epochs: [1, 2\n")
    with pytest.raises(ProfileError, match="not valid YAML"):
        load_profile(str(path))
    with pytest.raises(FileNotFoundError, match="did you mean 'tiny'"):
        load_profile("tnyi")


def test_load_profile_or_explain_prints_the_message_before_raising(tmp_path, capsys):
    from roadwork_ml.config import load_profile_or_explain

    with pytest.raises(ProfileError):
        load_profile_or_explain(str(_bad_profile(tmp_path, "train: {epohcs: 3}\n")))
    err = capsys.readouterr().err
    assert (
        err.startswith("roadwork: configuration error: profile")
        and "did you mean 'epochs'?" in err
        and "roadwork check-profile" in err
    )


def test_check_profile_command(tmp_path):
    import subprocess
    import sys

    ok = subprocess.run(
        [sys.executable, "-m", "roadwork_ml.serving.cli", "check-profile", "tiny", "--set", "train.epochs=2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        ok.returncode == 0
        and "profile 'tiny' is valid" in ok.stdout
        and "2 epoch(s)" in ok.stdout
        and "extends" in ok.stdout
    )
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "roadwork_ml.serving.cli",
            "check-profile",
            str(_bad_profile(tmp_path, "train: {epohcs: 3}\n")),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert (
        bad.stderr.startswith("roadwork check-profile: error: profile")
        and "train.epohcs: unknown key 'epohcs'; did you mean 'epochs'?" in bad.stderr
    )
