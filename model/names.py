"""Names of the files the model's commands write, kept in one place.

The workflow (``workflow/rules/common.smk``) imports these at parse time to declare its rules'
outputs, so this module imports nothing (``model/__init__.py`` is empty: no torch is loaded).

* :data:`FIGURES`: ``tomo figures`` writes ``FIGS/<name>.png`` for each (:mod:`model.figures`).
* :data:`PREVIEWS`: ``tomo infer`` writes ``STEM_<name>.png`` next to the volume for each
  (:mod:`model.volume_io`).
* :data:`EXAMPLES_FILE`: the qualitative examples' file of ``tomo examples`` in the workflow
  (``results/RUN/examples/examples.npz``, :mod:`model.examples`).
* ``EVAL_*``: the files ``tomo evaluate`` writes in its output folder (``results/RUN/eval/``,
  :mod:`model.evaluate`), read by the figures, the examples, the explorer and ``tomo cv-summary``;
  ``tomo cv-summary`` writes its pooled tables under the same names (:data:`EVAL_SUMMARY`,
  :data:`EVAL_SUMMARY_CSV`, :data:`EVAL_TESTS`, :data:`EVAL_SPECIES`) plus :data:`CV_FOLDS_CSV`.
* ``TRAIN_*``: the files ``tomo train`` writes in its output folder (``results/RUN/model/``,
  :mod:`model.train`), read by the workflow's rules and repairs, the checkpoint loader's hints and
  the explorer.
"""

from __future__ import annotations

__all__ = [
    "CV_BASE_TRAIN_ONLY",
    "CV_FOLDS_CSV",
    "CV_REPORT",
    "CV_SPECIES_SETS",
    "CV_SPECIES_SUBSETS",
    "CV_WITHOUT_BASE_VAL",
    "EVAL_MATCHES",
    "EVAL_METRICS",
    "EVAL_SLICE_COUNTS",
    "EVAL_SPECIES",
    "EVAL_SUMMARY",
    "EVAL_SUMMARY_CSV",
    "EVAL_TABLES",
    "EVAL_TESTS",
    "EVAL_VIEW_CLASSES",
    "EXAMPLES_FILE",
    "FIGURES",
    "FIG_FUSION",
    "FIG_METHODS",
    "FIG_QUALITATIVE",
    "FIG_SLICE_COUNTS",
    "FIG_SLICE_VIEWS",
    "FIG_VIEW_CLASSES",
    "NETWORK_PRESETS",
    "PREVIEWS",
    "TRAIN_ATTEMPTS",
    "TRAIN_BEST",
    "TRAIN_LAST",
    "TRAIN_LOG",
    "TRAIN_SUMMARY",
    "SUPERSEDED_DIR",
    "TRAIN_VAL_LOG",
]

#: paper Fig. 6: methods compared (model.figures.fig_methods)
FIG_METHODS = "fig6_methods"
#: paper Fig. 7: renders of fewer depth slices (model.qualitative.fig_slice_views)
FIG_SLICE_VIEWS = "fig7_slice_views"
#: paper Fig. 8a: DSSIM against the slice count (model.figures.fig_slice_counts)
FIG_SLICE_COUNTS = "fig8a_slice_counts"
#: paper Fig. 8b: error by view class (model.figures.fig_view_classes)
FIG_VIEW_CLASSES = "fig8b_view_classes"
#: paper Fig. 9: fusion against no fusion (model.figures.fig_fusion)
FIG_FUSION = "fig9_fusion"
#: paper Figs. 5/17: the qualitative grid (model.qualitative.fig_qualitative)
FIG_QUALITATIVE = "fig17_qualitative"
#: every figure of a full ``tomo figures`` run (with qualitative examples), as FIGS/<name>.png
FIGURES = (FIG_METHODS, FIG_SLICE_VIEWS, FIG_SLICE_COUNTS, FIG_VIEW_CLASSES, FIG_FUSION, FIG_QUALITATIVE)

#: the preview PNGs ``tomo infer`` writes next to the output volume as STEM_<name>.png
PREVIEWS = ("xray", "coronal", "axial", "sagittal", "mip_depth", "mip_side")

#: the file name of the qualitative examples in the workflow (results/RUN/examples/<this>)
EXAMPLES_FILE = "examples.npz"

#: the evaluation's record: settings, store, methods, sample counts (a JSON object)
EVAL_SUMMARY = "summary.json"
#: one row per (method, sample): every metric (model.evaluate.METRICS)
EVAL_METRICS = "metrics.csv"
#: one row per method: species-level means and intervals
EVAL_SUMMARY_CSV = "summary.csv"
#: ours against each baseline: paired tests on the held-out units
EVAL_TESTS = "tests.csv"
#: one row per (method, species): the held-out unit's means
EVAL_SPECIES = "species.csv"
#: error by view class (paper Fig. 8b)
EVAL_VIEW_CLASSES = "view_classes.csv"
#: DSSIM against the slice count (paper Fig. 8a)
EVAL_SLICE_COUNTS = "slice_counts.csv"
#: each sample's NN and Oracle match
EVAL_MATCHES = "matches.csv"
#: every table of ``tomo evaluate``
EVAL_TABLES = (
    EVAL_METRICS,
    EVAL_SUMMARY_CSV,
    EVAL_TESTS,
    EVAL_SPECIES,
    EVAL_VIEW_CLASSES,
    EVAL_SLICE_COUNTS,
    EVAL_MATCHES,
)
#: ``tomo cv-summary``'s per-fold table (results/RUN/cv/)
CV_FOLDS_CSV = "folds.csv"
#: ``tomo cv-summary``'s page of the result (model.cv_report; also ``tomo cv-report``)
CV_REPORT = "report.md"
#: ``tomo cv-summary``'s summary.json keys of its species subsets (beside every species): the store's own
#: train species only (never used for a choice), and every species but the store's own val species
CV_BASE_TRAIN_ONLY = "base_train_only"
CV_WITHOUT_BASE_VAL = "without_base_val"
CV_SPECIES_SUBSETS = (CV_BASE_TRAIN_ONLY, CV_WITHOUT_BASE_VAL)
#: the species sets ``tomo cv-compare`` can be restricted to: every species, or one of the subsets above
CV_SPECIES_SETS = ("all", *CV_SPECIES_SUBSETS)
#: the network presets' names (:meth:`model.network.NetworkConfig.preset`; here so that ``tomo``'s
#: parsers need no torch)
NETWORK_PRESETS = ("paper", "release", "medium", "demo")

#: the checkpoint of the lowest validation loss (what the evaluation, inference and explorer load)
TRAIN_BEST = "best.pt"
#: the latest checkpoint (resume state: weights, optimiser, schedule, RNG, the val log's rows, best.pt)
TRAIN_LAST = "last.pt"
#: one row per logged step: step, loss, lr, samples_per_s
TRAIN_LOG = "train_log.csv"
#: one row per validation: step, val_loss
TRAIN_VAL_LOG = "val_log.csv"
#: the training's record: settings, steps, best step and losses, timings (a JSON object)
TRAIN_SUMMARY = "summary.json"
#: one JSON line per start and end of a ``tomo train`` call that trains (model.train_attempts): the
#: folder's history, which outlives the workflow's log of the job
TRAIN_ATTEMPTS = "train_attempts.jsonl"
#: where a fresh start of ``tomo train`` (other settings or data, the workflow's mode) keeps the earlier
#: run's checkpoints and logs: ``model/superseded/step{N}-{UTC time}/``
SUPERSEDED_DIR = "superseded"
