"""What an eval folder records about the run it was made from (``tomo evaluate``'s ``summary.json``),
and the checks that tie the qualitative examples (:mod:`model.examples`) to it.

:func:`check_source` refuses (ValueError) to show an evaluation with other files than it was made
from: an eval folder made from another store or checkpoint (compared by content ids where
summary.json records them, ``store_content`` (:func:`store_content`) and ``checkpoint_sha256``, else
by the resolved paths ``store`` and ``checkpoint``; and by the facts it records of them: the
checkpoint's step and network, the store's splits, χ and image size), a checkpoint that does not fit
the store, and species the checkpoint trained on: the last two are evaluation's own checks
(:func:`model.eval_phases._check_compat` under the evaluation's ``strict``, and its leak check).

:func:`fusion_settings`: the evaluation's fusion (``settings.beta``, ``settings.fusion_at``; β = 2
at the x-ray's resolution for an eval folder from before they were recorded).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path

from tomodata.files import sha256_file

from .eval_config import FUSION_AT
from .eval_phases import _check_compat
from .names import EVAL_SUMMARY

__all__ = [
    "DEFAULT_FUSION",
    "check_examples_source",
    "check_source",
    "fusion_settings",
    "read_summary",
    "source_record",
    "store_content",
]

#: how ``ours`` was fused before an eval folder (or an examples file) recorded it
DEFAULT_FUSION = {"beta": 2.0, "fusion_at": "xray"}


_REDO = "; run tomo evaluate again (the workflow removes such a file and does so itself)"


def read_summary(eval_dir) -> dict:
    """``eval_dir/summary.json`` (ValueError when missing or not a JSON object)."""
    path = Path(eval_dir) / EVAL_SUMMARY
    if not path.is_file():
        raise ValueError(f"{path} does not exist: the evaluation is incomplete (tomo evaluate writes it)")
    try:
        summary = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is not tomo evaluate's summary: {type(e).__name__}: {e}{_REDO}") from None
    if not isinstance(summary, dict):
        raise ValueError(f"{path} is not tomo evaluate's summary (a JSON object){_REDO}")
    return summary


def fusion_settings(summary: dict) -> dict:
    """``{"beta", "fusion_at"}`` of an evaluation (its summary.json), :data:`DEFAULT_FUSION` where unrecorded."""
    settings = summary.get("settings") or {}
    beta, at = settings.get("beta", DEFAULT_FUSION["beta"]), settings.get("fusion_at", DEFAULT_FUSION["fusion_at"])
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not math.isfinite(beta) or beta <= 0:
        raise ValueError(f"summary.json's settings.beta must be a positive number, got {beta!r}")
    if at not in FUSION_AT:
        raise ValueError(f"summary.json's settings.fusion_at must be one of {list(FUSION_AT)}, got {at!r}")
    return {"beta": float(beta), "fusion_at": str(at)}


def store_content(ds) -> str:
    """A content id of a store: the sha256 of every species' stored checksum (``complete.sha256``)."""
    return ds.content_id()


def source_record(store, checkpoint, eval_dir, *, ds, state: dict) -> dict:
    """The examples' source for their file's meta: resolved paths and content ids."""
    return dict(
        store=str(Path(store).resolve()),
        checkpoint=str(Path(checkpoint).resolve()),
        eval=str(Path(eval_dir).resolve()),
        store_content=store_content(ds),
        checkpoint_sha256=sha256_file(checkpoint),
        checkpoint_step=int(state.get("step", -1)),
    )


def _same_path(recorded, given) -> bool:
    try:
        return os.path.samefile(recorded, given)
    except OSError:  # either is gone: compare the names
        return Path(recorded).resolve() == Path(given).resolve()


def _identity(record: dict, key: str, id_key: str, given, given_id: Callable[[], str]) -> str | None:
    """Why ``record`` (summary.json or an examples file's source) names another ``key`` than ``given``
    (by ``id_key`` where recorded, else by path); None when it is the same."""
    if record.get(id_key):
        now = given_id()
        return None if now == record[id_key] else f"{key} {id_key} {record[id_key]}, not {now}"
    rec = record.get(key)
    if rec is None or _same_path(rec, given):
        return None
    return f"{key} {rec} (resolved: {Path(rec).resolve()}), not {Path(given).resolve()}"


def _identities(record: dict, store, checkpoint, store_id: Callable[[], str], checkpoint_id: Callable[[], str]):
    """:func:`_identity` of the store and of the checkpoint: the differences found (a list of str)."""
    found = (
        _identity(record, "store", "store_content", store, store_id),
        _identity(record, "checkpoint", "checkpoint_sha256", checkpoint, checkpoint_id),
    )
    return [p for p in found if p]


def _recorded_facts(summary: dict, ds, state: dict) -> list[str]:
    """What summary.json records of its checkpoint and store and these ones differ in."""
    out = []
    step = int(state.get("step", -1))
    if "checkpoint_step" in summary and int(summary["checkpoint_step"]) != step:
        out.append(f"checkpoint_step {summary['checkpoint_step']}, not {step} (trained again since?)")
    then, now = summary.get("network") or {}, json.loads(json.dumps(state.get("network") or {}))
    keys = sorted(k for k in set(then) & set(now) if then[k] != now[k])
    if keys:
        out.append("network " + ", ".join(f"{k} {then[k]!r}, not {now[k]!r}" for k in keys))
    splits = {sp: ds.species_names(sp) for sp in summary.get("splits") or {}}
    if splits != (summary.get("splits") or {}):
        out.append(f"splits {summary['splits']}, not {splits} (the store was changed since?)")
    for key, value in (("chi", ds.settings.chi), ("image_size", ds.settings.image_size)):
        if key in summary and summary[key] != value:
            out.append(f"{key} {summary[key]!r}, not {value!r}")
    return out


def check_source(summary: dict, eval_dir, store, checkpoint, *, ds, state: dict, species) -> None:
    """Refuse (ValueError) to show ``eval_dir``'s evaluated ``species`` with ``store`` and
    ``checkpoint`` (opened: ``ds``, ``state``) when they do not fit each other or are not those the
    evaluation (``summary``, its summary.json) was made from (module docstring)."""
    diffs = _check_compat(state, store)
    strict = (summary.get("settings") or {}).get("strict", True)
    if diffs and (strict or diffs != summary.get("data_differences")):
        raise ValueError(
            f"checkpoint {checkpoint} was trained on other data than the store {store} (tomo evaluate refuses "
            "them too):\n  " + "\n  ".join(diffs)
        )
    problems = _identities(summary, store, checkpoint, lambda: store_content(ds), lambda: sha256_file(checkpoint))
    problems += _recorded_facts(summary, ds, state)
    if problems:
        raise ValueError(
            f"eval folder {eval_dir} was not made from the store {store} and checkpoint {checkpoint}: its "
            "summary.json records\n  " + "\n  ".join(problems) + "\ngive the store and checkpoint it was made "
            f"from, or evaluate these: tomo evaluate {store} --checkpoint {checkpoint} -o NEW_EVAL"
        )
    leaked = sorted(set(species) & set(state.get("data", {}).get("species", [])))
    if leaked:
        raise ValueError(
            f"evaluated species {leaked} of {eval_dir} were training species of {checkpoint} "
            "(tomo evaluate refuses them too)"
        )


def check_examples_source(meta: dict, path, eval_dir) -> None:
    """Refuse (ValueError) to draw the examples file ``path`` (its ``meta``) beside the evaluation
    ``eval_dir`` when they were made from another store or checkpoint or fused otherwise. A file
    from before its source was recorded (format 1) is not checked."""
    source = meta.get("source")
    if not source:
        return
    summary = read_summary(eval_dir)
    problems = _identities(
        summary,
        source["store"],
        source["checkpoint"],
        lambda: source["store_content"],
        lambda: source["checkpoint_sha256"],
    )
    if "checkpoint_step" in summary and summary["checkpoint_step"] != source.get("checkpoint_step"):
        problems.append(f"checkpoint_step {summary['checkpoint_step']}, not {source.get('checkpoint_step')}")
    fusion, evaluated = meta.get("fusion", DEFAULT_FUSION), fusion_settings(summary)
    if fusion != evaluated:
        problems.append(f"{path} was made with fusion {fusion}, {eval_dir} evaluated {evaluated}")
    if problems:
        raise ValueError(
            f"the examples file {path} was not made from the evaluation {eval_dir} (its summary.json records "
            "another):\n  " + "\n  ".join(problems) + "\nmake them from it: tomo examples STORE --checkpoint "
            f"CHECKPOINT --eval {eval_dir} -o {path}"
        )
