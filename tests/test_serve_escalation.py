"""`roadwork serve` follows the platform's escalation state: while the escalation file exists the
served decision policy runs escalated (tests/test_escalated_policy.py: SCRC at its stricter
risk, deferring more); removing the file clears it without a restart."""

import numpy as np

from roadwork_ml.serving.server.model import ServedModel
from tests.serving_fixtures import build_tiny_bundle


def test_the_served_policy_follows_the_escalation_file(tmp_path):
    bundle = build_tiny_bundle(tmp_path / "bundle", seed=0)
    state = tmp_path / "audit" / "escalation.json"
    model = ServedModel(bundle, escalation_file=state)
    images = np.full((2, 3, model.input_size, model.input_size), 0.5, dtype=np.float32)
    seen = []
    for present in (False, True, False):
        if present:
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text('{"since": "2026-11-11", "scrc_alpha": 0.02}')
        elif state.exists():
            state.unlink()
        model.run(0, images)
        seen.append((model.escalated, model.predictors[0].policy.escalated))
    assert seen == [(False, False), (True, True), (False, False)]
    # without a file configured the server never escalates (and never stats a path)
    plain = ServedModel(bundle)
    plain.run(0, images)
    assert plain.escalated is False and plain.predictors[0].policy.escalated is False
