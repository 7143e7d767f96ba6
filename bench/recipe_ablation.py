"""Recipe ablation (issue 11, item 6): today's phase-1 recipe vs each single change, on a
profile's own splits, compared on the same VAL_SELECT images by a paired bootstrap.

Variants (profile overrides on top of the profile; the same seeds for all):

    baseline        today's recipe
    validator_aug   train.augmentation.policy=validator (StreetVision levels 0-3 in training)
    balance         train.sampler.kind=class_source (class x source sampler, 50 % positives)
    focal           train.loss.name=focal
    hard_negatives  loss weights of the mined TRAIN false positives (the hard_negatives asset's
                    library functions: out-of-fold scores, mine_hard_negatives)
    ema             train.ema.enabled=true
    hpo_best        an Optuna study with the project's hpo code (roadwork_ml.training.hpo) at
                    --hpo-epochs epochs for --hpo-trials trials; the best parameters at full epochs
    combo           the union of the overrides of --combo-of (e.g. the changes that helped)

Follow-ups (run with --variants; FOLLOW_UPS below has their overrides): validator_half (the
validator policy on half the samples), validator_half_legacy (plus the legacy batch steps on
top), legacy_saturation (the legacy batch augmentation plus the validator's colour-saturation
step on half the samples: the profiles' default since this ablation), legacy_saturation_strong
(chroma 0.25-0.5), legacy_colour (plus brightness/contrast jitter 0.3),
legacy_saturation_geometry (plus the validator's rotation and crop on half the samples),
*_e20 (20 epochs, patience 6) and seed_control (today's recipe at the next seed: the noise
floor). Third pass: chroma_norm / photometric_norm (model.input_norm chroma / chroma_luma),
photometric_norm_saturation (plus the chroma step: the profiles' default since), _half (plus
the validator policy on half the samples), _source (a 128-px zoom source), _black / _robust
(statistics without the rotation's black corners / and a higher chroma floor), _geometry
(_saturation plus the validator geometry on half the batch). Fourth pass: _geometry_source
(its crop from the 128-px photo), _geometry_e14 / _e20 (14 / 20 epochs), _geometry75_e14 /
_geometry100_e14 (the geometry on 3/4 / all of the batch), _geometry75_noise_e14 (plus the
validator's colour noise on half the batch: the profiles' default since), _geometry100_noise_e14
(the geometry on every sample with the noise: the default since). Fifth pass, on top of
that default: default_views2 / _views2_js (two augmented views of each image per batch at the
same cost, without / with AugMix's Jensen-Shannon term), default_e16 / _e18 (16 / 18 epochs),
default_ls10 (label smoothing 0.1), default_ema99 (EMA at decay 0.99), default_noise100 (the
validator's noise on every sample). Sixth pass, on top of the default: default_dp10 (stochastic
depth 0.1), default_lost0 (a positive whose roadwork boxes the crop left out weighs 0),
default_served / _source_served (the batch's and the noise's resizes as the served path's,
/ and the batch sampled from the 128-px photo), default_black (the normalization's statistics
without black pixels). Seventh pass: default_noise75, default_bs32 / _bs16 (batch 32 / 16),
default_bs16_e12, default_bs32_noise100. Ninth pass, at batch 16: default_bs16_source /
_source_served (zoom crops from the 128-px photo, / through the served resizes),
default_bs16_noise100 (the noise on every sample), default_bs16_ema998 (EMA at decay 0.998), default_bs16_lr5e4 (lr 5e-4).
Tenth pass: default_bs16_select_reward (the checkpoint kept on VAL_SELECT's StreetVision reward),
default_bs16_maxpool (global max pooling), default_bs8 (batch 8), default_bs16_lost0 (lost-object
weight 0 at batch 16). Eleventh pass: default_bs16_mixup (mixup at Beta(0.2, 0.2)); lost-object
weight 0 becomes the profiles' default. Twelfth pass, on the default: default_bs16_lost0_jpeg (the
validator's JPEG q75 in the batch step), default_bs16_lost0_chroma (chroma-only normalization),
default_bs16_lost0_floor04 (a chroma floor of 0.04), default_bs16_lost0_zoomneg2 / _zoomneg15
(negatives whose frame shows at most half the image weigh 2 / 1.5). Thirteenth pass:
default_bs16_lost0_zoom2 (zoomed negatives and zoomed positives both at weight 2). Fourteenth
pass: default_bs16_lost0_lumafloor25 (the normalization's luma gain capped at 1.8x) and _j3 (with
brightness/contrast jitter 0.3), default_bs16_lost0_lumapow4 (the luma as a power mean, p = 4).
"Today's recipe"
pins all of these off (TODAY below; on the demo also its 10-epoch schedule, TODAY_SCHEDULE),
whatever the profile's default.

Each model is scored on VAL_SELECT (never VAL_TEST; ``bench/recipe_heldout.py`` scores the cached
checkpoints once on VAL_TEST after the choice) through the served view path (global view
plus the profile's flip TTA, P(roadwork) > 0.5): MCC on the stored images, and the StreetVision
emulation (roadwork_ml.evaluation.streetvision: 224 px, levels 0-3, JPEG q75) per-level MCC,
the level-0 minus level-3 MCC gap and the pooled reward. Every variant is compared with the
baseline of the same seed by a paired bootstrap over images (95 % percentile intervals of the
difference). Each trained variant is cached (predictions + timings), so a re-run only trains
what is missing; ``--report-only`` just rebuilds the table and JSON from the cache.

    DAGSTER_HOME=/work/ablation_home ROADWORK_PROFILE=demo \\
      python bench/recipe_ablation.py --seeds 42 --hpo-trials 6 --hpo-epochs 4 \\
        --out bench/results/recipe_ablation_demo.json

How bench/results/recipe_ablation_demo.json was made (2026-11-29, a copy of a make-demo home,
1 thread per process, up to 2 processes at once on a shared 2-core machine; the cache makes
the split into invocations safe):

    H="--home /work/ablation_home --profile demo"
    python bench/recipe_ablation.py $H --variants baseline,validator_aug,balance,focal,ema --seeds 42
    python bench/recipe_ablation.py $H --variants hard_negatives,hpo_best --seeds 42 --hpo-trials 8 --hpo-epochs 3
    python bench/recipe_ablation.py $H --variants seed_control,validator_half --seeds 42
    python bench/recipe_ablation.py $H --variants baseline,validator_half --seeds 43
    python bench/recipe_ablation.py $H --variants validator_aug --seeds 43
    python bench/recipe_ablation.py $H --variants seed_control --seeds 43
    python bench/recipe_ablation.py $H --variants validator_half --seeds 44
    python bench/recipe_ablation.py $H --variants baseline --seeds 44      # reuses seed_control_s43
    # second pass (issue 11 follow-ups, after bench/streetvision_distortions.py named the
    # colour-saturation step); every run also saves its checkpoint in the cache
    python bench/recipe_ablation.py $H --variants validator_half_legacy --seeds 42
    python bench/recipe_ablation.py $H --variants validator_half_e20 --seeds 42
    python bench/recipe_ablation.py $H --variants validator_half_legacy --seeds 43
    python bench/recipe_ablation.py $H --variants legacy_saturation --seeds 42
    python bench/recipe_ablation.py $H --variants legacy_saturation --seeds 43
    python bench/recipe_ablation.py $H --variants legacy_saturation_geometry --seeds 42
    python bench/recipe_ablation.py $H --variants legacy_saturation --seeds 44
    python bench/recipe_ablation.py $H --variants legacy_colour --seeds 42
    python bench/recipe_ablation.py $H --variants legacy_saturation_strong --seeds 42
    python bench/recipe_ablation.py $H --variants legacy_saturation_e20 --seeds 42
    python bench/recipe_ablation.py $H --variants baseline_e20 --seeds 42
    python bench/recipe_ablation.py $H --variants legacy_saturation_geometry --seeds 43
    python bench/recipe_ablation.py $H --variants baseline,legacy_saturation --seeds 45
    # third pass (2026-11-30): the photometric normalization in the model (model.input_norm)
    python bench/recipe_ablation.py $H --variants photometric_norm,chroma_norm --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm_half --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm --seeds 43      # then 44, 45
    python bench/recipe_ablation.py $H --variants photometric_norm_saturation --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants photometric_norm_source --seeds 42       # and 43
    python bench/recipe_ablation.py $H --variants chroma_norm --seeds 43
    python bench/recipe_ablation.py $H --variants photometric_norm_black,photometric_norm_robust --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm_robust --seeds 43       # then 44, 45
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry --seeds 42     # then 43-45
    # fourth pass (2026-11-30, after the bundle's predictor check was fixed): the schedule,
    # more geometry, the validator's colour noise in the batch (train.augmentation.noise_prob)
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry_source --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry_e14 --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry_e20 --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry75_e14 --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry100_e14 --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry75_noise_e14 --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry100_noise_e14 --seeds 42   # then 43-45
    # fifth pass (2026-11-30): two views per image at the same cost (train.consistency), longer
    # schedules, label smoothing, EMA at decay 0.99, each on top of the default
    python bench/recipe_ablation.py $H --variants default_views2,default_views2_js --seeds 42
    python bench/recipe_ablation.py $H --variants default_e16,default_e18 --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants default_ls10,default_ema99 --seeds 42   # then 43
    python bench/recipe_ablation.py $H --variants default_noise100 --seeds 42   # then 43-45
    # sixth pass (2026-11-30): stochastic depth, lost-object weights (train.augmentation.
    # lost_object_weight), the served path's resizes (served_side), the normalization without
    # black pixels, each on top of the default
    python bench/recipe_ablation.py $H --variants default_dp10 --seeds 42   # then 43
    python bench/recipe_ablation.py $H --variants default_lost0 --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants default_served --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants default_source_served,default_black --seeds 42
    python bench/recipe_ablation.py $H --variants photometric_norm_geometry100_noise_e14,default_served --seeds 46   # and 47
    # seventh pass (2026-11-30): the noise on 3/4, and smaller batches (more optimizer steps for
    # the same images and epochs), each on top of the sixth pass's default
    python bench/recipe_ablation.py $H --variants default_noise75 --seeds 42   # then 43-45
    python bench/recipe_ablation.py $H --variants default_bs32 --seeds 42   # then 43-47
    python bench/recipe_ablation.py $H --variants default_bs32_noise100,default_bs16 --seeds 42   # and 43
    python bench/recipe_ablation.py $H --variants default_bs16 --seeds 44   # then 45-47
    python bench/recipe_ablation.py $H --variants default_bs16_e12 --seeds 42   # and 43
    # eighth pass (2026-11-30): today's recipe re-trained with the current code into a second
    # cache (its first runs predate the saved checkpoints), for bench/recipe_heldout.py's
    # held-out VAL_TEST check of the cached checkpoints (that script's docstring)
    python bench/recipe_ablation.py $H --variants baseline --seeds 42,43 \\
        --cache-dir /work/ablation_home/recipe_ablation_b --set train.optimizer.fused=false   # then 44, 45
    V=baseline,seed_control,validator_aug,validator_half,balance,focal,hard_negatives,ema,hpo_best
    V=$V,validator_half_legacy,validator_half_e20,legacy_saturation,legacy_saturation_strong
    V=$V,legacy_colour,legacy_saturation_geometry,baseline_e20,legacy_saturation_e20
    V=$V,chroma_norm,photometric_norm,photometric_norm_saturation,photometric_norm_geometry,photometric_norm_half
    V=$V,photometric_norm_source,photometric_norm_black,photometric_norm_robust
    V=$V,photometric_norm_geometry_source,photometric_norm_geometry_e14,photometric_norm_geometry_e20
    V=$V,photometric_norm_geometry75_e14,photometric_norm_geometry100_e14,photometric_norm_geometry75_noise_e14
    V=$V,photometric_norm_geometry100_noise_e14,default_views2,default_views2_js,default_e16,default_e18
    V=$V,default_ls10,default_ema99,default_noise100,default_dp10,default_lost0,default_served
    V=$V,default_source_served,default_black,default_noise75,default_bs32,default_bs32_noise100
    V=$V,default_bs16,default_bs16_e12
    P=photometric_norm_robust:photometric_norm_saturation,chroma_norm:photometric_norm_saturation
    P=$P,photometric_norm_geometry:photometric_norm_saturation,photometric_norm_geometry:legacy_saturation_geometry
    P=$P,photometric_norm_geometry_e14:photometric_norm_geometry,photometric_norm_geometry75_e14:photometric_norm_geometry_e14
    P=$P,photometric_norm_geometry75_noise_e14:photometric_norm_geometry75_e14
    P=$P,photometric_norm_geometry75_noise_e14:photometric_norm_saturation
    P=$P,photometric_norm_geometry100_noise_e14:photometric_norm_geometry75_noise_e14
    D=photometric_norm_geometry100_noise_e14
    P=$P,default_e16:$D,default_e18:$D,default_ls10:$D,default_ema99:$D,default_noise100:$D
    P=$P,default_dp10:$D,default_lost0:$D,default_served:$D,default_noise75:$D,default_bs32:$D
    P=$P,default_bs16:$D,default_bs16:default_bs32,default_bs32_noise100:default_bs32
    P=$P,default_bs16_e12:default_bs16,default_bs16_e12:$D
    # (the epoch costs the JSON carries are the cache's, from an earlier --time-epoch report)
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 \\
      --hpo-trials 8 --hpo-epochs 3 --variants $V \\
      --pairs photometric_norm_saturation:legacy_saturation,photometric_norm:legacy_saturation,$P \\
      --slices-of $D --out bench/results/recipe_ablation_demo.json
    # the served resizes over six seeds (the default at 46 and 47 has no today's-recipe twin)
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45,46,47 --variants $D,default_served \\
      --pairs default_served:$D --out bench/results/recipe_ablation_demo_served_6seeds.json
    # batches 32 and 16 over six seeds
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45,46,47 --variants $D,default_bs32,default_bs16 \\
      --pairs default_bs16:$D,default_bs32:$D --out bench/results/recipe_ablation_demo_bs16_6seeds.json
    # ninth pass (2026-11-30, a fresh make-demo home, its own cache: two processes of 1 thread):
    # today's recipe and batch 16 re-trained, then sharper zoom crops and the noise on every sample
    # at batch 16 (default_bs16_source_served ran seeds 42-44 and was stopped: rewards in the docs)
    python bench/recipe_ablation.py $H --variants default_bs16,baseline --seeds 42,43,44,45
    python bench/recipe_ablation.py $H --variants default_bs16_source --seeds 42,43,44,45
    python bench/recipe_ablation.py $H --variants default_bs16_noise100 --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_ema998 --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_lr5e4 --seeds 42,43   # and 44,45
    V=default_bs16,default_bs16_source,default_bs16_noise100,default_bs16_ema998,default_bs16_lr5e4
    P=default_bs16_source:default_bs16,default_bs16_noise100:default_bs16
    P=$P,default_bs16_ema998:default_bs16,default_bs16_lr5e4:default_bs16
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 --variants $V --pairs $P \\
      --out bench/results/recipe_ablation_demo_ninth.json
    # tenth pass (2026-11-30, the ninth pass's home and cache, two processes of 1 thread each)
    python bench/recipe_ablation.py $H --variants default_bs16_select_reward --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_maxpool --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs8 --seeds 42,43   # and 44,45
    V10=default_bs16,default_bs16_select_reward,default_bs16_maxpool,default_bs8
    P10=default_bs16_select_reward:default_bs16,default_bs16_maxpool:default_bs16,default_bs8:default_bs16
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 --variants $V10 --pairs $P10 \\
      --out bench/results/recipe_ablation_demo_tenth.json
    # lost positives at weight 0, seeds 42-45 as above, then 46 and 47 beside batch 16's
    python bench/recipe_ablation.py $H --variants default_bs16_lost0 --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16,default_bs16_lost0 --seeds 46   # and 47
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45,46,47 \\
      --variants default_bs16,default_bs16_lost0 --pairs default_bs16_lost0:default_bs16 \\
      --out bench/results/recipe_ablation_demo_lost0_6seeds.json
    # eleventh pass (2026-11-30, the same home and cache): lost-weight 0 confirmed on fresh seeds, then mixup
    python bench/recipe_ablation.py $H --variants default_bs16,default_bs16_lost0 --seeds 48,49   # and 50,51
    python bench/recipe_ablation.py $H --variants default_bs16_mixup --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --report-only --seeds 48,49,50,51 \\
      --variants default_bs16,default_bs16_lost0 --pairs default_bs16_lost0:default_bs16 \\
      --out bench/results/recipe_ablation_demo_lost0_fresh.json   # and --seeds 42,...,51: _lost0_10seeds.json
    V11=baseline,default_bs16,default_bs16_lost0,default_bs16_mixup
    P11=default_bs16_lost0:baseline,default_bs16:baseline,default_bs16_lost0:default_bs16
    P11=$P11,default_bs16_mixup:default_bs16
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 --variants $V11 --pairs $P11 \\
      --out bench/results/recipe_ablation_demo_eleventh.json
    # twelfth pass (2026-12-01, the same home and cache): two changes on the default
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_jpeg --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_chroma --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_floor04 --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_zoomneg2 --seeds 42,43   # and 44,45
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_zoomneg15 --seeds 42,43   # and 44,45
    V12=baseline,default_bs16,default_bs16_lost0,default_bs16_lost0_jpeg,default_bs16_lost0_chroma
    V12=$V12,default_bs16_lost0_floor04,default_bs16_lost0_zoomneg2,default_bs16_lost0_zoomneg15
    P12=default_bs16_lost0_jpeg:default_bs16_lost0,default_bs16_lost0_chroma:default_bs16_lost0
    P12=$P12,default_bs16_lost0_floor04:default_bs16_lost0,default_bs16_lost0:baseline
    P12=$P12,default_bs16_lost0_zoomneg2:default_bs16_lost0,default_bs16_lost0_zoomneg15:default_bs16_lost0
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 --variants $V12 --pairs $P12 \\
      --out bench/results/recipe_ablation_demo_twelfth.json
    # held out, after the choice (a diagnosis of what the zoomed-negative weight does there)
    python bench/recipe_heldout.py $H --checkpoint-dirs /work/ablation_home/recipe_ablation \\
      --variants default_bs16_lost0,default_bs16_lost0_zoomneg2,default_bs16_lost0_zoomneg15 --threads 2 \\
      --pairs default_bs16_lost0_zoomneg2:default_bs16_lost0,default_bs16_lost0_zoomneg15:default_bs16_lost0 \\
      --out bench/results/recipe_heldout_demo_twelfth.json
    # thirteenth pass (2026-12-01, a fresh home: source_images and splits materialized, cache lost
    # with the previous machine). The default re-trained at 42-45 reproduces the twelfth pass's
    # numbers; then both zoomed weights at 2, and the zoomed-negative weights on fresh seeds 48-51
    python bench/recipe_ablation.py $H --variants default_bs16_lost0 --seeds 42,43,44,45   # beside:
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_zoom2 --seeds 42,43,44,45
    Z=default_bs16_lost0_zoomneg2,default_bs16_lost0_zoomneg15
    ZP=default_bs16_lost0_zoomneg2:default_bs16_lost0,default_bs16_lost0_zoomneg15:default_bs16_lost0
    python bench/recipe_ablation.py $H --variants default_bs16_lost0 --seeds 48,49,50,51   # beside:
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_zoomneg2 --seeds 48,49,50,51
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_zoomneg15 --seeds 48,49   # and 50,51
    python bench/recipe_ablation.py $H --report-only --seeds 48,49,50,51 --variants default_bs16_lost0,$Z \\
      --pairs $ZP --out bench/results/recipe_ablation_demo_zoomneg_fresh.json
    python bench/recipe_heldout.py $H --checkpoint-dirs /work/ablation_home/recipe_ablation --threads 1 \\
      --variants default_bs16_lost0,$Z --seeds 48,49,50,51 --pairs $ZP \\
      --out bench/results/recipe_heldout_demo_zoomneg_fresh.json
    # the twelfth pass's $Z re-trained at 42-45 too, for the shipped-cut bench (the same numbers)
    python bench/recipe_ablation.py $H --variants $Z --seeds 42,43   # and 44,45
    V13=default_bs16_lost0,$Z,default_bs16_lost0_zoom2
    P13=$ZP,default_bs16_lost0_zoom2:default_bs16_lost0
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 --variants $V13 --pairs $P13 \\
      --out bench/results/recipe_ablation_demo_thirteenth.json
    python bench/recipe_heldout.py $H --checkpoint-dirs /work/ablation_home/recipe_ablation --threads 2 \\
      --variants $V13 --seeds 42,43,44,45 --pairs $P13 --out bench/results/recipe_heldout_demo_thirteenth.json
    # each model at the cut its bundle would ship: bench/recipe_shipped_cut.py's docstring
    # fourteenth pass (2026-12-01, the same home and cache): fresh seeds of the default for the
    # shipped-cut question, then a luma floor of 0.25 at 42-45 and (exploratory) 48-51
    python bench/recipe_ablation.py $H --variants default_bs16_lost0 --seeds 46,52,54,56   # beside:
    python bench/recipe_ablation.py $H --variants default_bs16_lost0 --seeds 47,53,55,57
    L=default_bs16_lost0_lumafloor25
    python bench/recipe_ablation.py $H --variants $L --seeds 42,44   # beside 43,45; then 48,50 and 49,51
    python bench/recipe_ablation.py $H --variants ${L}_j3 --seeds 42,44   # beside 43,45
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 --variants default_bs16_lost0,$L,${L}_j3 \
      --pairs $L:default_bs16_lost0,${L}_j3:default_bs16_lost0,${L}_j3:$L \
      --out bench/results/recipe_ablation_demo_lumafloor.json
    python bench/recipe_ablation.py $H --variants default_bs16_lost0_lumapow4 --seeds 42,44   # beside 43,45
    python bench/recipe_ablation.py $H --report-only --seeds 42,43,44,45 \
      --variants default_bs16_lost0,default_bs16_lost0_lumapow4 --pairs default_bs16_lost0_lumapow4:default_bs16_lost0 \
      --out bench/results/recipe_ablation_demo_lumapow.json   # recipe_heldout.py likewise: ..._lumapow.json
    # (and --seeds 48,49,50,51 --out ..._lumafloor_fresh.json; recipe_heldout.py with the same
    # --variants/--pairs/--seeds, --threads 2: recipe_heldout_demo_lumafloor.json, ..._lumafloor_fresh.json)

The store must hold ``splits`` and ``source_images`` of the profile (a finished ``make demo``
home, copied: nothing is written into the store; the cache goes under --cache-dir).
Training runs on --threads CPU threads (default 1) with the DataLoader in-process.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SINGLE_CHANGES = {
    "baseline": [],
    "validator_aug": ["train.augmentation.policy=validator"],
    "balance": ["train.sampler.kind=class_source"],
    "focal": ["train.loss.name=focal"],
    "hard_negatives": ["hard_negatives.use_in_training=true"],
    "ema": ["train.ema.enabled=true"],
    "hpo_best": [],  # the study's best parameters, applied to the train section
}
_HALF = ["train.augmentation.policy=validator", "train.augmentation.source_prob=0.5"]
_LONG = ["train.epochs=20", "train.early_stopping_patience=6"]
_E14 = ["train.epochs=14", "train.early_stopping_patience=6"]
# the photometric normalization with the chroma step: the default the fourth pass builds on
_PNS = ["model.input_norm=chroma_luma", "train.augmentation.saturation_prob=0.5"]
_NOISE = "train.augmentation.noise_prob=0.5"
# the profiles' default since the fourth pass (photometric_norm_geometry100_noise_e14)
_DEFAULT = [*_PNS, "train.augmentation.geometry_prob=1.0", _NOISE, *_E14]
# Not in the default list: follow-ups a first pass suggested (run with --variants).
# the default since the eleventh pass: batch 16 with lost positives at weight 0
_LOST0 = [*_DEFAULT, "train.batch_size=16", "train.augmentation.lost_object_weight=0.0"]

FOLLOW_UPS = {
    # the validator levels on half the samples, the stored photo as is on the other half
    "validator_half": _HALF,
    # today's recipe with train.seed + 1: the difference a new seed alone makes (the noise floor)
    "seed_control": [],
    # validator on half the samples with today's batch augmentation on top of every sample
    "validator_half_legacy": [*_HALF, "train.augmentation.legacy_on_top=true"],
    # today's recipe plus chroma scaling (the validator's colour-saturation step) on half the samples
    "legacy_saturation": ["train.augmentation.saturation_prob=0.5"],
    # ... plus the validator's geometry (rotation, 20-100 % square crop) on half the samples
    "legacy_saturation_geometry": ["train.augmentation.saturation_prob=0.5", "train.augmentation.geometry_prob=0.5"],
    # chroma factor 0.25-0.5 (around the validator's 0.4 / 0.3) on half the samples
    "legacy_saturation_strong": [
        "train.augmentation.saturation_prob=0.5",
        "train.augmentation.saturation_range=[0.25,0.5]",
    ],
    # saturation with brightness/contrast jitter 1 +- 0.3 (the validator's contrast step darkens to 0.85 / 0.725)
    "legacy_colour": ["train.augmentation.saturation_prob=0.5", "train.augmentation.jitter=0.3"],
    "legacy_colour_geometry": [
        "train.augmentation.saturation_prob=0.5",
        "train.augmentation.jitter=0.3",
        "train.augmentation.geometry_prob=0.5",
    ],
    # twice today's epochs (patience 6): whether level 0 comes back with a longer schedule
    "baseline_e20": _LONG,
    "validator_half_e20": [*_HALF, *_LONG],
    "validator_half_legacy_e20": [*_HALF, "train.augmentation.legacy_on_top=true", *_LONG],
    "legacy_saturation_e20": ["train.augmentation.saturation_prob=0.5", *_LONG],
    # per-image photometric normalization in the model (roadwork_ml.models.photometric): the
    # validator's saturation (and contrast) gains undone by construction instead of learned
    "chroma_norm": ["model.input_norm=chroma"],
    "photometric_norm": ["model.input_norm=chroma_luma"],
    "photometric_norm_saturation": ["model.input_norm=chroma_luma", "train.augmentation.saturation_prob=0.5"],
    "photometric_norm_half": ["model.input_norm=chroma_luma", *_HALF],
    # the statistics leave the rotation's black corners out / also amplify low-chroma crops less
    "photometric_norm_black": [
        "model.input_norm=chroma_luma",
        "train.augmentation.saturation_prob=0.5",
        "model.input_norm_min_luma=0.02",
    ],
    "photometric_norm_robust": [
        "model.input_norm=chroma_luma",
        "train.augmentation.saturation_prob=0.5",
        "model.input_norm_min_luma=0.02",
        "model.input_norm_chroma_floor=0.02",
    ],
    # the default plus the validator's rotation and crop on half the batch: level 1 with the colour gone
    "photometric_norm_geometry": [*_PNS, "train.augmentation.geometry_prob=0.5"],
    # _geometry with a longer schedule: whether level 0 comes back
    "photometric_norm_geometry_e14": [*_PNS, "train.augmentation.geometry_prob=0.5", *_E14],
    "photometric_norm_geometry_e20": [*_PNS, "train.augmentation.geometry_prob=0.5", *_LONG],
    # the geometry on three quarters / all of the batch
    "photometric_norm_geometry75_e14": [*_PNS, "train.augmentation.geometry_prob=0.75", *_E14],
    "photometric_norm_geometry100_e14": [*_PNS, "train.augmentation.geometry_prob=1.0", *_E14],
    # with the validator's Gaussian colour noise on half the batch (level 3's costliest step once
    # the colour gains are gone: bench/streetvision_distortions.py)
    "photometric_norm_geometry75_noise_e14": [*_PNS, "train.augmentation.geometry_prob=0.75", _NOISE, *_E14],
    "photometric_norm_geometry100_noise_e14": [*_PNS, "train.augmentation.geometry_prob=1.0", _NOISE, *_E14],
    # fifth pass: the default (_geometry100_noise_e14) with two augmented views of each image per
    # batch at the same cost (train.consistency), alone and with AugMix's Jensen-Shannon term (12)
    "default_views2": [*_DEFAULT, "train.consistency.views=2"],
    "default_views2_js": [*_DEFAULT, "train.consistency.views=2", "train.consistency.weight=12"],
    # the default's best epoch was the last or next to last at every seed: 16 / 18 epochs
    "default_e16": [*_DEFAULT, "train.epochs=16"],
    "default_e18": [*_DEFAULT, "train.epochs=18"],
    # the default's level-1 loss is false positives on plain negatives (dusk, night, rain) under the
    # crop: smoothing the targets / averaging the weights (timm ModelEmaV3 at a decay its ~460 steps can use)
    "default_ls10": [*_DEFAULT, "train.label_smoothing=0.1"],
    "default_ema99": [*_DEFAULT, "train.ema.enabled=true", "train.ema.decay=0.99"],
    # level 3's loss is missed positives under the noise (level-3 TPR 0.81 vs 0.86): the noise on every sample
    "default_noise100": [*_DEFAULT, "train.augmentation.noise_prob=1.0"],
    # seventh pass: between the two (the noise on every sample met the gap by giving level 0 away)
    "default_noise75": [*_DEFAULT, "train.augmentation.noise_prob=0.75"],
    # 14 epochs of batch 64 are only ~460 optimizer steps: twice the steps for the same images
    "default_bs32": [*_DEFAULT, "train.batch_size=32"],
    "default_bs16": [*_DEFAULT, "train.batch_size=16"],
    # batch 16 at 12 epochs: what the demo's 10 minutes can pay for (3.4x the steps of batch 64 at 14)
    "default_bs16_e12": [*_DEFAULT, "train.batch_size=16", "train.epochs=12"],
    # the noise on every sample gave level 0 away (-0.025): with the better-trained batch-32 model
    "default_bs32_noise100": [*_DEFAULT, "train.batch_size=32", "train.augmentation.noise_prob=1.0"],
    # sixth pass: stochastic depth (timm's drop_path_rate) on the resnet's residual blocks, a
    # regularizer against the crop's unlearnable positives
    "default_dp10": [*_DEFAULT, "model.drop_path_rate=0.1"],
    # a positive whose every roadwork box the crop left out of the frame keeps its label but can
    # teach only "plain street = roadwork" (level 1's false positives): its loss weight 0 / 0.25
    # level 1's false positives are dark negatives: the normalization's statistics without the
    # rotation's black corners (an angle-dependent share of black lowers the luma mean it undoes)
    "default_black": [*_DEFAULT, "model.input_norm_min_luma=0.02"],
    # the served path resizes 224 -> 128 (antialiased) -> 64 (bilinear, a 2 x 2 box): the noise it
    # serves is 1.25x what one antialiased 224 -> 64 resize leaves; train through the same steps
    "default_served": [*_DEFAULT, "train.augmentation.served_side=128"],
    # ... and sample the batch from the stored 128-px photo, brought to 64 px as a served image is
    "default_source_served": [*_DEFAULT, "train.augmentation.served_side=128", "train.augmentation.source_side=128"],
    "default_lost0": [*_DEFAULT, "train.augmentation.lost_object_weight=0.0"],
    "default_lost25": [*_DEFAULT, "train.augmentation.lost_object_weight=0.25"],
    # ninth pass: at batch 16 the level-1 loss on VAL_TEST is zoomed night/dusk negatives; the batch
    # step crops 64-px TRAIN images (a 20 % crop has 29 px of detail), the validator crops the photo
    # (57 px of the 128-px scene): zoomed crops as sharp as the served ones
    "default_bs16_source": [*_DEFAULT, "train.batch_size=16", "train.augmentation.source_side=128"],
    # ... and brought to 64 px through the served path's two resizes (128 antialiased, then a 2 x 2 box)
    "default_bs16_source_served": [
        *_DEFAULT,
        "train.batch_size=16",
        "train.augmentation.source_side=128",
        "train.augmentation.served_side=128",
    ],
    # level 3's extra loss at batch 16 is night positives under the noise (VAL_SELECT level-3 TPR
    # 0.78 against 0.86 at level 0): the noise on every sample, once the model is trained this long
    "default_bs16_noise100": [*_DEFAULT, "train.batch_size=16", "train.augmentation.noise_prob=1.0"],
    # batch 16's VAL_SELECT MCC moves 0.03-0.05 between epochs and the checkpoint is the best of
    # them: EMA over ~4 epochs of its 133 steps (timm ModelEmaV3, kept when it scores higher)
    "default_bs16_ema998": [*_DEFAULT, "train.batch_size=16", "train.ema.enabled=true", "train.ema.decay=0.998"],
    # batch 16 kept batch 64's lr (1e-3): four times the per-image step; half of it (the
    # square-root scaling rule) for a steadier model
    "default_bs16_lr5e4": [*_DEFAULT, "train.batch_size=16", "train.lr=5.0e-4"],
    # the checkpoint kept (and early stopping) on what a miner is paid on: VAL_SELECT as the
    # validator sends it, every level, pooled reward at 0.5, through the served global view,
    # instead of VAL_SELECT MCC on the stored images (roadwork_ml.training.selection)
    "default_bs16_select_reward": [*_DEFAULT, "train.batch_size=16", "train.selection.metric=streetvision_reward"],
    # the level-1 false positives are zoomed lights: an average-pooled feature grows with the
    # area a zoom gives a lamp, a max-pooled one answers to the local evidence alone (timm's
    # global_pool, the same head and parameters)
    "default_bs16_maxpool": [*_DEFAULT, "train.batch_size=16", "model.timm_kwargs.global_pool=max"],
    # batch 64 -> 16 raised every level (the model was under-trained): twice batch 16's steps again
    "default_bs8": [*_DEFAULT, "train.batch_size=8"],
    # a positive whose roadwork the crop left out teaches "zoomed street = roadwork", the look of
    # level 1's false positives; measured at batch 64 (sixth pass), re-measured on the better-trained model
    "default_bs16_lost0": _LOST0,
    # eleventh pass: mixup (train.mixup) at Beta(0.2, 0.2) on every batch: an image that holds only part
    # of the evidence (a faded lamp, a half-seen cone) is taught an intermediate score, against the
    # confident zoomed night false positives at level 1
    "default_bs16_mixup": [*_DEFAULT, "train.batch_size=16", "train.mixup.alpha=0.2"],
    # twelfth pass: every sample ends as the validator's images do, 8 bits and Pillow JPEG q75 at
    # 224 px (train.augmentation.jpeg_prob). After its colour-saturation step the codec leaves
    # block error where an orange object's chroma was, and the chroma normalization scales it
    # back up: on VAL_TEST that step costs the default 0.02 of MCC with the JPEG, 0 without
    "default_bs16_lost0_jpeg": [
        *_LOST0,
        "train.augmentation.jpeg_prob=1.0",
    ],
    # the luma gain of the normalization brightens a night scene 2.6x (VAL_TEST's median night
    # image has mean luma 0.175 against the target 0.45), a zoomed dark crop more: its lamps and
    # tail lights bloom, the look of level 1's false positives. Chroma only keeps night dark
    "default_bs16_lost0_chroma": [
        *_LOST0,
        "model.input_norm=chroma",
    ],
    # level 1's false positives held out are zoomed night and dusk negatives: a negative whose frame
    # shows at most half the image weighs twice (train.augmentation.zoomed_negative_weight)
    "default_bs16_lost0_zoomneg2": [
        *_LOST0,
        "train.augmentation.zoomed_negative_weight=2.0",
    ],
    # held out, weight 2 took level 1's zoomed false positives to level 0's rate and lost zoomed
    # positives instead: half the push
    "default_bs16_lost0_zoomneg15": [
        *_LOST0,
        "train.augmentation.zoomed_negative_weight=1.5",
    ],
    # thirteenth pass: weight 2 on zoomed negatives shifted the zoomed frames' prior toward "no
    # roadwork" and lost zoomed positives at level 3. Zoomed positives at the same weight keep that
    # prior where it was and still give the zoomed views twice the say
    "default_bs16_lost0_zoom2": [
        *_LOST0,
        "train.augmentation.zoomed_negative_weight=2.0",
        "train.augmentation.zoomed_positive_weight=2.0",
    ],
    # the normalization scales a desaturated image's chroma, and with it the validator's codec
    # error, back to the target: at chroma x 0.3 the median VAL_SELECT image (chroma RMS 0.058 at
    # 64 px, 0.017 after) is amplified 4.6x. A floor of 0.04 caps that at 2x for most of them and
    # leaves images at full colour alone; the chroma step teaches what the floor lets through
    "default_bs16_lost0_floor04": [
        *_LOST0,
        "model.input_norm_chroma_floor=0.04",
    ],
    # fourteenth pass: on VAL_TEST the darkest quarter of the negatives (mean luma < 0.24 at level 1)
    # goes from 0.019 false positives at level 0 to 0.094 at level 1, where the normalization
    # brightens them 1.8-4.3x; a luma floor of 0.25 caps that gain at 1.8x and leaves the rest
    # (75 % of the images) invariant to the validator's contrast step as before
    "default_bs16_lost0_lumafloor25": [
        *_LOST0,
        "model.input_norm_luma_floor=0.25",
    ],
    # with the floor a dark image the validator's contrast step darkens (x 0.725 at level 3) is no
    # longer normalized back, and the batch step's brightness factor (1 +- jitter, 0.2) never goes
    # that dark: jitter 0.3 shows the model a dark image at the validator's darkest
    "default_bs16_lost0_lumafloor25_j3": [
        *_LOST0,
        "model.input_norm_luma_floor=0.25",
        "train.augmentation.jitter=0.3",
    ],
    # the floor cost dark positives because below it the contrast step is no longer undone. A power
    # mean of the luma (p = 4) is still a gain, so the contrast step stays undone for every image,
    # and it weighs the bright pixels: at level 1 it is 1.4-1.5x the mean on dark negatives and
    # 1.17x on the rest, so a night scene with lit lamps is brightened about a quarter less
    "default_bs16_lost0_lumapow4": [
        *_LOST0,
        "model.input_norm_luma_power=4",
    ],
    # _geometry with TRAIN kept at the stored 128 px: the crop samples real pixels as the
    # validator's does (from the full-size image), then shrinks to the input
    "photometric_norm_geometry_source": [
        *_PNS,
        "train.augmentation.geometry_prob=0.5",
        "train.augmentation.source_side=128",
    ],
    # TRAIN kept at the stored 128 px: the batch zoom samples real pixels, then shrinks to the input
    "photometric_norm_source": ["model.input_norm=chroma_luma", "train.augmentation.source_side=128"],
    "photometric_norm_source_geometry": [
        "model.input_norm=chroma_luma",
        "train.augmentation.source_side=128",
        "train.augmentation.geometry_prob=0.5",
    ],
}
ALL = [*SINGLE_CHANGES, *FOLLOW_UPS, "combo"]


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# "Today's recipe" is the one before this ablation's changes: the profiles now default to what
# it found (the chroma step, the photometric normalization, the validator geometry and noise in
# the batch step, lost-object weight 0, the demo's 14 epochs) or may (source_side), so the
# baseline (and every single change on top of it) pins them off.
TODAY = [
    "train.augmentation.saturation_prob=0.0",
    "train.augmentation.geometry_prob=0.0",
    "model.input_norm=none",
    "train.augmentation.source_side=0",
    "train.augmentation.noise_prob=0.0",
    "train.augmentation.lost_object_weight=1.0",
]
# the demo's schedule before the fourth pass and its batch before the seventh (the cached runs')
TODAY_SCHEDULE = {"demo": ["train.epochs=10", "train.early_stopping_patience=4", "train.batch_size=64"]}
EXTRA: list[str] = []  # --set: overrides under every variant (smoke runs: train.epochs=1)


def load(profile_name: str, overrides: list[str], threads: int):
    from roadwork_ml.config import load_profile

    base = [f"train.num_threads={threads}", "data.loader.num_workers=0", "data.loader.persistent_workers=false"]
    today = [*TODAY, *TODAY_SCHEDULE.get(profile_name, [])]
    return load_profile(profile_name, [*base, *today, *EXTRA, *overrides])


class DirectoryStore:
    """A dereferenced copy of a store's ``splits`` and ``source_images`` (``cp -rL`` of
    ``artifacts/splits`` and ``artifacts/source_images``), read without Dagster: the same rows,
    files and sha256 checks as the store, for a machine that has only the ML libraries (a GPU
    box). The splits directory's MANIFEST is verified; each image's sha256 is checked on decode."""

    def __init__(self, root: str | Path):
        from roadwork_ml.artifacts import verify_dir

        self.root = Path(root)
        verify_dir(self.root / "splits")
        import pandas as pd

        self.table = pd.read_parquet(self.root / "splits" / "splits.parquet")

    def rows(self, split):
        df = self.table[self.table["split"] == split.value]
        return df.sort_values("record_id", kind="stable").reset_index(drop=True)

    def paths(self, rows) -> list[Path]:
        return [
            self.root / "source_images" / m.rsplit("/", 1)[-1] / p
            for m, p in zip(rows["manifest_dir"], rows["path"], strict=True)
        ]

    def dataset(self, rows, split, size: int, profile, cache_side: int | None = None):
        from roadwork_ml.training.dataset import open_rows_dataset

        data = profile.data
        return open_rows_dataset(self.paths(rows), rows, split, size, data.decode, data.loader, cache_side)

    def tensors(self, rows, split, size: int):
        from roadwork_ml.data.transforms import load_verified_batch
        from roadwork_ml.training.trainer import TensorSplit

        labels = torch.from_numpy(rows["label"].to_numpy().astype(np.int64))
        return TensorSplit(load_verified_batch(self.paths(rows), list(rows["sha256"]), size), labels, split)


class Bench:
    def __init__(self, args):
        from roadwork_ml.contracts import Split
        from roadwork_ml.training.trainer import train_cache_side

        self.args = args
        self.cache = Path(args.cache_dir)
        self.cache.mkdir(parents=True, exist_ok=True)
        self.profile = p = load(args.profile, [], args.threads)
        native_size = max(p.inference.input_size, p.evaluation.streetvision.size)
        if getattr(args, "store_dir", None):
            d = DirectoryStore(args.store_dir)
            self.train_rows, self.val_rows = d.rows(Split.TRAIN), d.rows(Split.VAL_SELECT)
            if p.train.max_train_images:  # as load_train_rows draws them
                n = min(len(self.train_rows), p.train.max_train_images)
                self.train_rows = (
                    self.train_rows.sample(n=n, random_state=p.train.seed)
                    .sort_values("record_id")
                    .reset_index(drop=True)
                )
            side = train_cache_side(p.model, p.train)
            self.train = d.dataset(self.train_rows, Split.TRAIN, p.model.img_size, p, side)
            self.val = d.dataset(self.val_rows, Split.VAL_SELECT, p.model.img_size, p)
            self.native = d.tensors(self.val_rows, Split.VAL_SELECT, native_size)
            self.native_rows = self.val_rows
        else:
            from roadwork_assets.data import load_split_rows, load_split_tensors
            from roadwork_assets.recipe import phase1_datasets
            from roadwork_assets.resources import ArtifactStore

            self.store = ArtifactStore(root=str(Path(args.home) / "artifacts"))
            self.train_rows, self.train, self.val_rows, self.val = phase1_datasets(self.store, p)
            rows = load_split_rows(self.store, Split.VAL_SELECT)
            self.native = load_split_tensors(self.store, rows, Split.VAL_SELECT, native_size)
            self.native_rows = rows  # the rows of self.y, in its order
        self.y = self.native.labels.numpy()
        self._selection_views: dict = {}  # train.selection's views, drawn once per setting
        _log(f"TRAIN {len(self.train)}, VAL_SELECT {len(self.y)} images ({self.y.mean():.1%} positive)")

    # ------------------------------------------------------------------ training
    @functools.cached_property
    def object_boxes(self):
        """TRAIN rows' roadwork boxes (tags, else the regenerated synthetic scenes), read once."""
        from streetvision_geometry_oracle import train_boxes

        return train_boxes(self.train_rows, self.profile)

    def _train(self, profile, train_cfg, weights=None, on_epoch=None):
        from roadwork_ml.augment.policy import photo_styles
        from roadwork_ml.training.phase1 import train_phase1

        torch.set_num_threads(self.args.threads)
        lost = train_cfg.augmentation.lost_object_weight < 1
        return train_phase1(
            profile.model,
            train_cfg,
            self.train,
            self.val,
            loader=profile.data.loader,
            sample_weights=weights,
            styles=photo_styles(profile),
            object_boxes=self.object_boxes if lost else None,
            on_epoch=on_epoch,
            select_score=self.select_score(profile, train_cfg),
            log=_log,
            progress=False,
        )

    def select_score(self, profile, train_cfg):
        """The trainer's ``select_score`` for ``train.selection`` (None for val_mcc), from VAL_SELECT
        at the StreetVision size; the views are drawn once per selection setting and served size."""
        from roadwork_ml.training.selection import selection_rows, streetvision_views

        sel = train_cfg.selection
        if sel.metric == "val_mcc":
            return None
        inf, size = profile.inference, profile.evaluation.streetvision.size
        key = (tuple(sel.levels), sel.seed, sel.max_images, inf.input_size, size)
        views = self._selection_views.get(key)
        if views is None:
            keep = np.flatnonzero(self.native_rows.index.isin(selection_rows(self.native_rows, sel).index))
            bs = inf.batch_size
            batches = (
                (self.native.images[keep[s : s + bs]], self.y[keep[s : s + bs]]) for s in range(0, len(keep), bs)
            )
            t0 = time.perf_counter()
            views = self._selection_views[key] = streetvision_views(batches, sel.levels, sel.seed, inf.input_size, size)
            _log(f"selection views: {tuple(views.views.shape)} in {time.perf_counter() - t0:.1f}s")
        return views.scorer(profile.model, inf)

    def hard_negative_weights(self) -> tuple[np.ndarray, dict]:
        """The hard_negatives asset's computation (out-of-fold TRAIN scores with the profile's
        recipe, then mine_hard_negatives), cached; weights [N TRAIN]."""
        from roadwork_ml.training.hard_negatives import (
            false_positive_rate,
            hard_negative_slice,
            mine_hard_negatives,
            out_of_fold_scores,
        )
        from roadwork_ml.training.trainer import predict_dataset

        path = self.cache / "hard_negatives.npz"
        meta_path = self.cache / "hard_negatives.json"
        if path.exists():
            return np.load(path)["weights"], json.loads(meta_path.read_text())
        p = self.profile
        hn = p.hard_negatives
        fold_cfg = p.train.model_copy(update={"epochs": self.args.hn_epochs or hn.epochs or p.train.epochs})
        t0 = time.perf_counter()

        def fit_predict(fit_idx, score_idx):
            _log(f"hard negatives: fold model on {len(fit_idx)} rows, scoring {len(score_idx)}")
            run = train_phase1_subset(self, p, fold_cfg, fit_idx)
            logits = predict_dataset(run.model, self.train.subset(score_idx), p.inference.batch_size, p.data.loader)
            return torch.softmax(logits, 1)[:, 1].numpy()

        labels = self.train_rows["label"].to_numpy()
        scores = out_of_fold_scores(
            fit_predict, labels, self.train_rows["group_id"].to_numpy(), hn.n_folds, p.train.seed
        )
        mined = mine_hard_negatives(scores, labels, hn.min_score, hn.max_fraction, hn.weight)
        in_slice = hard_negative_slice(self.train_rows["tags"].tolist())
        meta = {
            "n_folds": hn.n_folds,
            "fold_epochs": fold_cfg.epochs,
            "mined": len(mined.indices),
            "weight": hn.weight,
            "min_score": hn.min_score,
            "max_fraction": hn.max_fraction,
            "oof_fpr_hard_negative_slice": false_positive_rate(scores, labels, in_slice, hn.min_score),
            "oof_fpr_all_negatives": false_positive_rate(scores, labels, None, hn.min_score),
            "seconds": time.perf_counter() - t0,
        }
        np.savez(path, weights=mined.weights, scores=scores)
        meta_path.write_text(json.dumps(meta, indent=2))
        _log(f"hard negatives: {meta}")
        return mined.weights, meta

    def hpo_best(self) -> dict:
        """A small Optuna study (roadwork_ml.training.hpo) at reduced epochs; cached best params."""
        import optuna

        from roadwork_ml.training.hpo import build_study, phase1_objective, run_study

        a, p = self.args, self.profile
        name = f"ablation_{p.name}_e{a.hpo_epochs}"
        out = self.cache / f"hpo_{name}.json"
        hpo_cfg = p.hpo.model_copy(update={"n_trials": a.hpo_trials, "study_name": name})
        base = p.train.model_copy(update={"epochs": a.hpo_epochs})
        study = build_study(f"sqlite:///{self.cache / 'hpo.db'}", hpo_cfg, base.epochs)
        t0 = time.perf_counter()

        def train_fn(cfg, report) -> float:
            def on_epoch(s) -> None:
                report(s.epoch, s.val_mcc)

            return self._train(p, cfg, on_epoch=on_epoch).result.best_mcc

        run_study(study, phase1_objective(train_fn, base, hpo_cfg.search_space), hpo_cfg)
        trials = [
            {"number": t.number, "state": t.state.name, "value": t.value, **t.params}
            for t in study.trials
            if t.state != optuna.trial.TrialState.RUNNING
        ]
        prev = json.loads(out.read_text()) if out.exists() else {"seconds": 0.0}
        res = {
            "study_name": name,
            "trial_epochs": a.hpo_epochs,
            "n_trials": len(trials),
            "complete": sum(t["state"] == "COMPLETE" for t in trials),
            "pruned": sum(t["state"] == "PRUNED" for t in trials),
            "best_trial": study.best_trial.number,
            "best_value": study.best_value,
            "best_params": study.best_params,
            "trials": trials,
            "seconds": prev["seconds"] + time.perf_counter() - t0,
        }
        out.write_text(json.dumps(res, indent=2))
        _log(f"hpo: best trial {res['best_trial']} VAL_SELECT MCC {res['best_value']:.4f} {res['best_params']}")
        return res

    def uses_hpo(self, variant: str) -> bool:
        return variant == "hpo_best" or (variant == "combo" and "hpo_best" in self.args.combo_of.split(","))

    def overrides(self, variant: str) -> list[str]:
        """Profile overrides of a variant (hpo_best's parameters are applied to the train section apart)."""
        if variant == "combo":
            if not self.args.combo_of:
                raise SystemExit("combo needs --combo-of")
            return [o for v in self.args.combo_of.split(",") for o in self.overrides(v)]
        return list({**SINGLE_CHANGES, **FOLLOW_UPS}[variant])

    # ------------------------------------------------------------------ evaluation
    def predict_fn(self, model, profile):
        """uint8 [B, 3, H, W] at the StreetVision size -> P(roadwork) [B], as the evaluation
        asset serves it: resized to inference.input_size, global view (+ flip TTA), mean."""
        from roadwork_ml.models.inference import global_view_probability

        return global_view_probability(model, profile.model, profile.inference)

    def run_variant(self, variant: str, seed: int) -> dict:
        from roadwork_ml.evaluation.streetvision import streetvision_eval

        key = f"{variant}_s{seed}"
        meta_path, npz_path = self.cache / f"{key}.json", self.cache / f"{key}.npz"
        if meta_path.exists() and npz_path.exists():
            return json.loads(meta_path.read_text())
        twin = f"seed_control_s{seed - 1}"  # today's recipe at train.seed = seed: the same run
        if variant == "baseline" and (self.cache / f"{twin}.npz").exists():
            meta = {**json.loads((self.cache / f"{twin}.json").read_text()), "variant": "baseline", "seed": seed}
            meta["reused_from"] = twin
            np.savez(npz_path, **np.load(self.cache / f"{twin}.npz"))
            meta_path.write_text(json.dumps(meta, indent=2))
            return meta
        overrides = self.overrides(variant)
        hpo_params = self.hpo_best()["best_params"] if self.uses_hpo(variant) else None
        train_seed = seed + 1 if variant == "seed_control" else seed
        profile = load(self.args.profile, [*overrides, f"train.seed={train_seed}"], self.args.threads)
        train_cfg = profile.train
        if hpo_params:  # optuna is needed only here (a GPU box may not have it)
            from roadwork_ml.training.hpo import apply_params

            train_cfg = apply_params(profile.train, hpo_params)
        weights, hn_meta = (None, None)
        if profile.hard_negatives.use_in_training:
            weights, hn_meta = self.hard_negative_weights()
        _log(f"{key}: training with {overrides}")
        t0 = time.perf_counter()
        run = self._train(profile, train_cfg, weights)
        wall = time.perf_counter() - t0
        model = run.model.cpu().eval()
        from roadwork_ml.training.checkpoint import save_checkpoint

        save_checkpoint(model, profile.model, self.cache / f"{key}_checkpoint", info={"overrides": overrides})
        t1 = time.perf_counter()
        fn = self.predict_fn(model, profile)
        p_val = fn(self.native.images)
        sv = streetvision_eval(
            fn,
            self.native.images,
            self.y,
            levels=profile.evaluation.streetvision.levels,
            seed=profile.evaluation.streetvision.seed,
            batch_size=profile.inference.batch_size,
            n_resamples=self.args.n_resamples,
            n_jobs=1,
            return_outputs=True,
        )
        outputs = sv.pop("outputs")
        r = run.result
        meta = {
            "variant": variant,
            "seed": seed,
            "train_seed": train_seed,
            "overrides": overrides,
            "hpo_params": hpo_params,
            "hard_negatives": hn_meta,
            "train_wall_seconds": wall,
            "train_epoch_seconds": float(sum(h.seconds for h in r.history)),
            "epochs_run": len(r.history),
            "best_epoch": r.best_epoch,
            "best_is_ema": r.best_is_ema,
            "best_val_select_mcc_during_training": r.best_mcc,
            "eval_seconds": time.perf_counter() - t1,
            "streetvision": {
                k: (
                    {kk: (vv.to_dict() if hasattr(vv, "to_dict") else vv) for kk, vv in v.items()}
                    if isinstance(v, dict)
                    else v
                )
                for k, v in sv.items()
            },
        }
        np.savez(npz_path, p_val=p_val, **{f"level_{lv}": o for lv, o in outputs.items()})
        meta_path.write_text(json.dumps(meta, indent=2))
        _log(
            f"{key}: train {wall:.0f}s ({len(r.history)} epochs, best {r.best_epoch}), "
            f"VAL_SELECT MCC {r.best_mcc:.4f}, pooled reward {sv['pooled']['reward'].estimate:.4f}"
        )
        return meta


def train_phase1_subset(bench: Bench, profile, cfg, fit_idx):
    from roadwork_ml.augment.policy import photo_styles
    from roadwork_ml.training.phase1 import train_phase1

    return train_phase1(
        profile.model,
        cfg,
        bench.train.subset(fit_idx),
        bench.val,
        loader=profile.data.loader,
        styles=photo_styles(profile),
        log=_log,
        progress=False,
    )


def epoch_cpu_costs(bench: Bench, variants: list[str]) -> dict:
    """Process CPU seconds (one thread, so little affected by other processes on the machine)
    of one TRAIN epoch's parts: the optimizer steps (forward + backward over every batch) of
    today's model and of each variant's model where it differs (``model.input_norm``), the
    legacy batch augmentation (at the variant's ``source_side``), and each variant's per-sample
    validator transform. Wall times of the runs above are shared-machine numbers; these are the
    costs."""
    from roadwork_ml.augment.policy import photo_styles
    from roadwork_ml.data.transforms import to_float
    from roadwork_ml.models.classifier import build_classifier
    from roadwork_ml.training.losses import build_loss
    from roadwork_ml.training.trainer import _train_transform, legacy_augment, train_cache_side

    torch.set_num_threads(bench.args.threads)
    p = bench.profile
    cfg, ds = p.train, bench.train
    n, bs = len(ds), cfg.batch_size
    images = torch.stack([ds[i][0] for i in range(n)])  # decoded, no transform
    labels = torch.as_tensor(np.asarray(ds.labels), dtype=torch.int64)
    out: dict = {"n_train": n, "batch_size": bs}

    def steps_cpu_s(model_cfg) -> float:
        torch.manual_seed(0)
        model = build_classifier(model_cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
        loss_fn = build_loss(cfg.loss, cfg.label_smoothing, np.asarray(ds.labels))
        t = time.process_time()
        for s in range(0, n, bs):
            loss = loss_fn(model(to_float(images[s : s + bs])), labels[s : s + bs], None)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return time.process_time() - t

    def legacy_cpu_s(train_cfg, side: int | None = None) -> float:
        batches = [to_float(images[s : s + bs]) for s in range(0, n, bs)]
        if side:  # the source_side cache (decoded once, not per epoch): larger images in, input size out
            batches = [torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear") for x in batches]
        gen = torch.Generator().manual_seed(0)
        t = time.process_time()
        for x in batches:
            legacy_augment(x, gen, train_cfg, out_size=ds.size)
        return time.process_time() - t

    out["steps_cpu_s"] = steps_cpu_s(p.model)
    out["legacy_augment_cpu_s"] = legacy_cpu_s(cfg)
    for v in variants:
        vp = load(bench.args.profile, bench.overrides(v), bench.args.threads)
        out[f"{v}_steps_cpu_s"] = out["steps_cpu_s"] if vp.model == p.model else steps_cpu_s(vp.model)
        transform = _train_transform(vp.train, ds.size, photo_styles(vp))
        if transform is None:  # a batch-wise (legacy) policy with this variant's knobs
            out[f"{v}_transform_cpu_s"] = legacy_cpu_s(vp.train, train_cache_side(vp.model, vp.train))
            continue
        t = time.process_time()
        for i in range(n):
            transform(images[i], i)
        out[f"{v}_transform_cpu_s"] = time.process_time() - t
    base = out["steps_cpu_s"] + out["legacy_augment_cpu_s"]
    out["epoch_cost_ratio_vs_baseline"] = {
        v: (out[f"{v}_steps_cpu_s"] + out[f"{v}_transform_cpu_s"]) / base
        for v in variants
        if f"{v}_transform_cpu_s" in out
    }
    _log(f"epoch CPU costs: {out}")
    return out


# ---------------------------------------------------------------------- report
def _fmt(iv: dict, digits: int = 3, signed: bool = True) -> str:
    f = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: f"{v:.{digits}f}")
    return f"{f(iv['estimate'])} [{f(iv['low'])}, {f(iv['high'])}]"


def compare(cache: Path, y: np.ndarray, variants: list[str], seeds: list[int], n_resamples: int) -> dict:
    from roadwork_ml.evaluation.bootstrap import bootstrap_metrics, paired_bootstrap
    from roadwork_ml.evaluation.streetvision import paired_streetvision

    out: dict = {"runs": {}, "comparisons": {}, "absolute": {}}
    for seed in seeds:
        ref_key = f"baseline_s{seed}"
        ref_run = np.load(cache / f"{ref_key}.npz") if (cache / f"{ref_key}.npz").exists() else None
        for variant in variants:
            key = f"{variant}_s{seed}"
            if not (cache / f"{key}.npz").exists():
                continue
            new = np.load(cache / f"{key}.npz")
            # without today's recipe at this seed the run still gets its absolute row (the paired
            # bootstrap against itself gives the same resamples of its own metrics), no difference row
            ref = new if ref_run is None else ref_run
            levels = _levels(ref)
            meta = json.loads((cache / f"{key}.json").read_text())
            out["runs"][key] = meta
            sv = paired_streetvision(
                y,
                {lv: new[f"level_{lv}"] for lv in levels},
                {lv: ref[f"level_{lv}"] for lv in levels},
                n_resamples=n_resamples,
                seed=seed,
            )
            absolute = bootstrap_metrics(y, new["p_val"], metrics=["mcc"], n_resamples=n_resamples, n_jobs=1)
            out["absolute"][key] = {
                "val_select_mcc": absolute["mcc"]["percentile"].to_dict(),
                **{m: sv[m]["new"].to_dict() for m in sv},
            }
            if variant == "baseline" or ref_run is None:
                continue
            vs = paired_bootstrap(y, new["p_val"], ref["p_val"], "mcc", n_resamples=n_resamples, seed=seed, n_jobs=1)
            out["comparisons"][key] = {
                "val_select_mcc": vs.to_dict(),
                **{m: {"diff": sv[m]["diff"].to_dict()} for m in sv},
            }
    out["seed_mean"] = seed_mean_comparisons(cache, y, variants, seeds, n_resamples)
    out["class_rates"] = {v: class_rates(y, _runs(cache, v, seeds)) for v in variants}
    return out


def _levels(run) -> list[int]:
    """The emulated levels a cached run's outputs hold (its ``level_<k>`` arrays)."""
    return sorted(int(k.split("_")[1]) for k in run.files if k.startswith("level_"))


def _runs(cache: Path, variant: str, seeds: list[int]) -> list:
    """The cached outputs of ``variant`` at each of ``seeds`` that ran."""
    return [np.load(cache / f"{variant}_s{s}.npz") for s in seeds if (cache / f"{variant}_s{s}.npz").exists()]


def slice_false_positive_rates(y: np.ndarray, column: np.ndarray, runs: list) -> dict:
    """Per value of ``column``: its negatives' count and their seed-averaged false-positive rate
    at 0.5 at each emulated level (the level-1 loss of the default is false positives)."""
    levels = _levels(runs[0]) if runs else []
    column = column.astype(str)
    out = {}
    for value in sorted(set(column)):
        neg = (y == 0) & (column == value)
        out[value] = {
            "n_negatives": int(neg.sum()),
            **{
                f"level_{lv}": float(np.mean([r[f"level_{lv}"][neg] > 0.5 for r in runs])) for lv in levels if neg.any()
            },
        }
    return out


def class_rates(y: np.ndarray, runs: list) -> dict:
    """Per emulated level, the seed-averaged true-positive and false-positive rates at the
    validator's 0.5 cut: which class a level's MCC loss comes from."""
    if not runs:
        return {}
    levels = _levels(runs[0])
    pos, neg = y == 1, y == 0
    out = {}
    for lv in levels:
        hit = np.mean([r[f"level_{lv}"] > 0.5 for r in runs], axis=0)
        out[f"level_{lv}"] = {"tpr": float(hit[pos].mean()), "fpr": float(hit[neg].mean())}
    return {"n_seeds": len(runs), **out}


def seed_mean_comparisons(
    cache: Path, y: np.ndarray, variants: list[str], seeds: list[int], n_resamples: int, reference: str = "baseline"
) -> dict:
    """Each variant run at two or more of ``seeds`` against ``reference`` (today's recipe) at the
    same seeds: the seed-averaged metrics compared by one paired bootstrap over images (the
    per-seed rows show the seed-to-seed spread that this interval does not cover)."""
    from roadwork_ml.evaluation.streetvision import paired_streetvision

    out: dict = {}
    for variant in variants:
        if variant == reference:
            continue
        both = [
            s for s in seeds if (cache / f"{variant}_s{s}.npz").exists() and (cache / f"{reference}_s{s}.npz").exists()
        ]
        if len(both) < 2:
            continue
        new = [np.load(cache / f"{variant}_s{s}.npz") for s in both]
        ref = [np.load(cache / f"{reference}_s{s}.npz") for s in both]
        levels = _levels(ref[0])
        sv = paired_streetvision(
            y,
            [{lv: r[f"level_{lv}"] for lv in levels} for r in new],
            [{lv: r[f"level_{lv}"] for lv in levels} for r in ref],
            n_resamples=n_resamples,
            seed=0,
        )
        out[variant] = {"seeds": both, **{m: {k: iv.to_dict() for k, iv in sv[m].items()} for m in sv}}
    return out


def pair_comparisons(cache: Path, y: np.ndarray, pairs: list[str], seeds: list[int], n_resamples: int) -> dict:
    """``{"NEW:REF": seed_mean_comparisons(...)[NEW]}`` for each ``NEW:REF`` of ``pairs`` (None where
    fewer than two seeds have both)."""
    out = {}
    for pair in pairs:
        new, ref = pair.split(":")
        out[pair] = seed_mean_comparisons(cache, y, [new], seeds, n_resamples, ref).get(new)
    return out


STREETVISION_COLUMNS = ("mcc_level_0", "mcc_level_1", "mcc_level_2", "mcc_level_3", "mcc_gap_0_3", "pooled_reward")


def table(res: dict, variants: list[str], seeds: list[int]) -> str:
    lines = [
        "Absolute (VAL_SELECT; 95 % bootstrap intervals):",
        "",
        "| variant | seed | train s | epochs (best) | VAL_SELECT MCC | L0 MCC | L1 MCC | L2 MCC | L3 MCC | gap L0-L3 | pooled reward |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        for v in variants:
            key = f"{v}_s{seed}"
            if key not in res["absolute"]:
                continue
            a, m = res["absolute"][key], res["runs"][key]
            lines.append(
                f"| {v} | {seed} | {m['train_wall_seconds']:.0f} | {m['epochs_run']} ({m['best_epoch']}) | "
                + " | ".join(_fmt(a[k], signed=False) for k in ("val_select_mcc", *STREETVISION_COLUMNS))
                + " |"
            )
    lines += [
        "",
        "Difference vs baseline of the same seed (paired bootstrap over the same images, 95 % intervals):",
        "",
        "| variant | seed | epoch wall x (shared CPU) | Δ VAL_SELECT MCC | Δ L0 MCC | Δ L1 MCC | Δ L2 MCC | Δ L3 MCC | Δ gap L0-L3 | Δ pooled reward |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for seed in seeds:
        base = res["runs"].get(f"baseline_s{seed}")
        for v in variants:
            key = f"{v}_s{seed}"
            if key not in res["comparisons"]:
                continue
            c, m = res["comparisons"][key], res["runs"][key]
            ratio = m["train_epoch_seconds"] / m["epochs_run"] / (base["train_epoch_seconds"] / base["epochs_run"])
            lines.append(
                f"| {v} | {seed} | {ratio:.2f} | {_fmt(c['val_select_mcc']['interval'])} | "
                + " | ".join(_fmt(c[k]["diff"]) for k in STREETVISION_COLUMNS)
                + " |"
            )
    if res.get("seed_mean"):
        lines += [
            "",
            "Mean over the seeds each variant ran (minus the baseline at the same seeds; one paired bootstrap over images):",
            "",
            "| variant | seeds | L0 MCC | L3 MCC | gap L0-L3 | pooled reward | Δ L0 MCC | Δ L3 MCC | Δ gap L0-L3 | Δ pooled reward |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for v, c in res["seed_mean"].items():
            keys = ("mcc_level_0", "mcc_level_3", "mcc_gap_0_3", "pooled_reward")
            lines.append(
                f"| {v} | {','.join(map(str, c['seeds']))} | "
                + " | ".join(_fmt(c[k]["new"], signed=False) for k in keys)
                + " | "
                + " | ".join(_fmt(c[k]["diff"]) for k in keys)
                + " |"
            )
    rates = {v: r for v, r in (res.get("class_rates") or {}).items() if r}
    if rates:
        levels = sorted(k for k in next(iter(rates.values())) if k.startswith("level_"))
        lines += [
            "",
            "Where each level's MCC goes: true-positive / false-positive rate at 0.5, averaged over the seeds run:",
            "",
            "| variant | seeds | " + " | ".join(f"L{k.split('_')[1]} TPR / FPR" for k in levels) + " |",
            "|---|---|" + "---|" * len(levels),
        ]
        for v, r in rates.items():
            cells = " | ".join(f"{r[k]['tpr']:.3f} / {r[k]['fpr']:.3f}" for k in levels)
            lines.append(f"| {v} | {r['n_seeds']} | {cells} |")
    for v, cols in (res.get("slice_fpr") or {}).items():
        lines += ["", f"{v}: false-positive rate per level by slice (negatives only, seed-averaged):", ""]
        lines += ["| slice | negatives | L0 | L1 | L2 | L3 |", "|---|---|---|---|---|---|"]
        for col, values in cols.items():
            for value, r in values.items():
                cells = " | ".join(f"{r[k]:.3f}" for k in sorted(r) if k.startswith("level_"))
                lines.append(f"| {col}={value} | {r['n_negatives']} | {cells} |")
    for pair, c in (res.get("pairs") or {}).items():
        if c is None:
            continue
        keys = ("mcc_level_0", "mcc_level_3", "mcc_gap_0_3", "pooled_reward")
        lines += [
            "",
            f"{pair.replace(':', ' minus ')} over seeds {','.join(map(str, c['seeds']))} (paired bootstrap over images):",
            "",
            "| Δ L0 MCC | Δ L3 MCC | Δ gap L0-L3 | Δ pooled reward |",
            "|---|---|---|---|",
            "| " + " | ".join(_fmt(c[k]["diff"]) for k in keys) + " |",
        ]
    costs = res.get("epoch_cpu_costs")
    if costs:
        ratios = ", ".join(f"{v} {r:.2f}x" for v, r in costs["epoch_cost_ratio_vs_baseline"].items())
        lines += [
            "",
            f"One TRAIN epoch's CPU cost (1 thread, process time): optimizer steps {costs['steps_cpu_s']:.1f} s, "
            f"legacy augmentation {costs['legacy_augment_cpu_s']:.1f} s; each variant's epoch (its model's steps and its augmentation) vs today's: {ratios}.",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DAGSTER_HOME", "dagster_home"))
    ap.add_argument(
        "--store-dir",
        default=None,
        help="read splits and source_images from this dereferenced copy of <home>/artifacts instead (no Dagster needed)",
    )
    ap.add_argument("--profile", default=os.environ.get("ROADWORK_PROFILE", "demo"))
    ap.add_argument("--variants", default=",".join(SINGLE_CHANGES), help=f"comma list of {ALL}")
    ap.add_argument("--combo-of", default="", help="variants whose overrides the combo variant joins")
    ap.add_argument("--seeds", default="42", help="comma list of train.seed values")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--hpo-trials", type=int, default=6)
    ap.add_argument("--hpo-epochs", type=int, default=4)
    ap.add_argument("--hn-epochs", type=int, default=0, help="epochs of each hard-negative fold model (0 = profile)")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--cache-dir", default=None, help="default: <home>/recipe_ablation (outside the repo)")
    ap.add_argument("--set", action="append", default=[], help="override under every variant (smoke runs)")
    ap.add_argument("--time-epoch", action="store_true", help="also measure one epoch's CPU cost per part")
    ap.add_argument("--report-only", action="store_true", help="no training: the table from the cache")
    ap.add_argument("--pairs", default="", help="extra seed-mean comparisons NEW:REF, e.g. a new default vs the old")
    ap.add_argument(
        "--slices-of", default="", help="variants whose false-positive rate per level is broken down by --slice-columns"
    )
    ap.add_argument("--slice-columns", default="time_of_day,weather,source", help="VAL_SELECT row columns")
    ap.add_argument("--budget-s", type=float, default=0, help="start no new run after this many seconds (0: no limit)")
    ap.add_argument("--out", default="bench/results/recipe_ablation.json")
    args = ap.parse_args()
    args.cache_dir = args.cache_dir or str(Path(args.home) / "recipe_ablation")
    EXTRA[:] = args.set
    torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(ALL))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; choose from {ALL}")
    seeds = [int(s) for s in args.seeds.split(",")]
    bench = Bench(args)
    t0 = time.perf_counter()
    if not args.report_only:  # the listed variants only (another invocation may be training the baseline)
        for seed in seeds:
            for v in variants:
                if args.budget_s and time.perf_counter() - t0 > args.budget_s:
                    _log(f"budget of {args.budget_s:.0f} s spent: {v}_s{seed} and later runs not started")
                    break
                bench.run_variant(v, seed)
    if "baseline" not in variants:
        variants.insert(0, "baseline")
    res = compare(bench.cache, bench.y, variants, seeds, args.n_resamples)
    cost_path = bench.cache / "epoch_cpu_costs.json"
    if args.time_epoch:
        cost_path.write_text(json.dumps(epoch_cpu_costs(bench, variants), indent=2))
    res["epoch_cpu_costs"] = json.loads(cost_path.read_text()) if cost_path.exists() else None
    hpo_files = sorted(bench.cache.glob("hpo_*.json"))
    res.update(
        {
            "profile": args.profile,
            "split": "VAL_SELECT",
            "n_images": int(len(bench.y)),
            "positive_share": float(bench.y.mean()),
            "seeds": seeds,
            "threads": args.threads,
            "n_resamples": args.n_resamples,
            "variants": {v: bench.overrides(v) for v in variants},
            "combo_of": args.combo_of or None,
            "hpo": [json.loads(f.read_text()) for f in hpo_files],
            "hard_negatives": json.loads((bench.cache / "hard_negatives.json").read_text())
            if (bench.cache / "hard_negatives.json").exists()
            else None,
            "command": " ".join(sys.argv),
            "seconds_this_invocation": time.perf_counter() - t0,
        }
    )
    if pairs := [p for p in args.pairs.split(",") if p]:
        res["pairs"] = pair_comparisons(bench.cache, bench.y, pairs, seeds, args.n_resamples)
    for v in [v for v in args.slices_of.split(",") if v]:
        runs = _runs(bench.cache, v, seeds)
        res.setdefault("slice_fpr", {})[v] = {
            col: slice_false_positive_rates(bench.y, bench.native_rows[col].to_numpy(), runs)
            for col in args.slice_columns.split(",")
        }
    md = table(res, variants, seeds)
    res["table_markdown"] = md
    print(md)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2, default=float))
    _log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
