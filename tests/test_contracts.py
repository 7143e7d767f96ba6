import numpy as np
import pytest
import torch

from roadwork_ml.contracts import (
    ContractError,
    LeakageError,
    Purpose,
    Split,
    assert_disjoint,
    require_split,
    validate_logits,
    validate_policy_json,
    validate_state_dict,
)

PURPOSE_SPLIT = [
    (Purpose.FIT_MODEL, Split.TRAIN),
    (Purpose.MODEL_SELECTION, Split.VAL_SELECT),
    (Purpose.FIT_POLICY, Split.VAL_CALIB),
    (Purpose.FINAL_EVALUATION, Split.VAL_TEST),
    (Purpose.MONITOR_REFERENCE, Split.VAL_CALIB),  # drift references: never VAL_TEST, never TRAIN
    (Purpose.SELF_SUPERVISED, Split.TRAIN),  # ExPLoRA: TRAIN images with labels ignored, never a VAL split
]
# served by production traffic alone: no dataset split may feed it
NO_SPLIT_PURPOSES = [Purpose.MONITOR_ROLLING_REFERENCE]


def test_every_purpose_is_covered_by_the_contract_test():
    assert {p for p, _ in PURPOSE_SPLIT} | set(NO_SPLIT_PURPOSES) == set(Purpose)


@pytest.mark.parametrize("purpose", NO_SPLIT_PURPOSES)
def test_traffic_only_purposes_refuse_every_split(purpose):
    for split in Split:
        with pytest.raises(LeakageError, match=split.value):
            require_split(purpose, split)


@pytest.mark.parametrize("purpose, ok", PURPOSE_SPLIT)
def test_each_purpose_accepts_only_its_split(purpose, ok):
    require_split(purpose, ok)
    for other in set(Split) - {ok}:
        with pytest.raises(LeakageError, match=other.value):
            require_split(purpose, other)


def test_mixed_or_missing_tags_leak():
    with pytest.raises(LeakageError):
        require_split(Purpose.FIT_POLICY, [Split.VAL_CALIB, Split.VAL_TEST])
    with pytest.raises(LeakageError, match="no split tag"):
        require_split(Purpose.FIT_POLICY, [])
    require_split("fit_policy", "val_calib")


def test_assert_disjoint():
    assert_disjoint({"train": ["a", "b"], "val_test": ["c"]})
    with pytest.raises(LeakageError, match="'b'"):
        assert_disjoint({"train": ["a", "b"], "val_test": ["b"]})


def test_logits_and_checkpoint_validators():
    validate_logits(np.zeros((3, 2)), np.array([0, 1, 1]))
    with pytest.raises(ContractError, match=r"\[N, 2\]"):
        validate_logits(np.zeros((3, 3)))
    with pytest.raises(ContractError, match="non-finite values in 1 rows"):
        validate_logits(np.array([[0.0, np.nan], [0, 1]]))
    with pytest.raises(ContractError, match="labels"):
        validate_logits(np.zeros((2, 2)), np.array([0, 2]))
    validate_state_dict({"backbone.w": torch.ones(2), "head.w": torch.ones(1)})
    with pytest.raises(ContractError, match="head"):
        validate_state_dict({"backbone.w": torch.ones(2)})
    with pytest.raises(ContractError, match="backbone.w"):
        validate_state_dict({"backbone.w": torch.tensor([1.0, float("inf")]), "head.w": torch.ones(1)})
    validate_policy_json({"kind": "thresholds", "tau": 0.9}, "thresholds", ["tau"])
    with pytest.raises(ContractError, match="missing"):
        validate_policy_json({"kind": "thresholds"}, "thresholds", ["tau"])
