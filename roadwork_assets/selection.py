"""What ``make demo`` (and the README's CLI sequence) materializes after the source partitions.

The recipe-search assets (``explora_checkpoint``, ``hard_negatives``, ``hpo_study``) are
expensive and feed phase 1 only when the profile says so, so they are left out of the build
unless their output is used: ``model.init_from: explora_checkpoint``,
``hard_negatives.use_in_training``, ``hpo.apply_best``. Run them by name otherwise (README).

``python -m roadwork_assets.selection [PROFILE]`` prints the Dagster selection string.
Imports no Dagster and no torch: the Makefile calls it before each demo.
"""

import sys

from roadwork_ml.config import Profile, load_profile

DAILY = ("production_traffic", "drift_report")
RECIPE_SEARCH = ("explora_checkpoint", "hard_negatives", "hpo_study")


def recipe_assets_used(profile: Profile) -> set[str]:
    """The recipe-search assets whose artifact phase 1 reads under ``profile``."""
    used = set()
    if profile.model.init_from == "explora_checkpoint":
        used.add("explora_checkpoint")
    if profile.hard_negatives.use_in_training:
        used.add("hard_negatives")
    if profile.hpo.apply_best:
        used.add("hpo_study")
    return used


def excluded_from_build(profile: Profile) -> list[str]:
    """Asset keys ``splits+`` must leave out: the daily partitions and the unused recipe search."""
    used = recipe_assets_used(profile)
    return [*DAILY, *(k for k in RECIPE_SEARCH if k not in used)]


def unpartitioned_tail(profile: Profile) -> str:
    """``key:"splits"+`` minus :func:`excluded_from_build`, in Dagster's selection syntax."""
    return 'key:"splits"+' + "".join(f' and not key:"{k}"' for k in excluded_from_build(profile))


if __name__ == "__main__":
    import os

    print(
        unpartitioned_tail(
            load_profile(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("ROADWORK_PROFILE") or "demo")
        )
    )
