"""The strict pydantic base of every settings model (profile, monitoring).

``extra="forbid"``: a misspelt key in a profile YAML is an error, not a silently ignored setting;
``frozen=True``: a resolved profile cannot be changed behind the back of the code that hashed it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
