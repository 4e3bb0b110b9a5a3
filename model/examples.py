"""The qualitative examples: the network's predictions on chosen held-out samples, computed once and
shared by the figures (Figs. 5/17, 7 and Fig. 9's example row) and the applications.

``tomo examples`` (the workflow's rule ``examples``) runs :func:`qualitative_examples`
(the first evaluated sample of each species, then further ones, from the eval folder's
``matches.csv``) and writes them to one ``.npz`` file; ``tomo figures --examples-file`` and
``tomo apps --examples-file`` read its first rows. The picks do not depend on how many are asked for,
so the first ``n`` rows of a file made for ``N >= n`` are those a run for ``n`` would make.

The examples show the evaluation they are made from: the store, checkpoint and eval folder must
belong together (:func:`model.eval_source.check_source`: the store and checkpoint that the eval
folder's summary.json records, a checkpoint that fits the store, no species it trained on; else a
ValueError naming both and what to run), and ``ours`` is fused as that evaluation fused it: its
``settings.beta`` and ``settings.fusion_at`` (``tomo evaluate --beta`` / ``--fusion-at``; β = 2 at
the x-ray's resolution for an eval folder that does not record them). ``tomo figures --eval E
--examples-file F`` refuses a file made from another store or checkpoint, or fused otherwise, than E.

File (``numpy.savez_compressed``, no pickles; every array as computed, dtypes kept):

* ``meta``: JSON text ``{"format": 2, "requested": N, "rows": n, "fusion": {"beta", "fusion_at"},
  "source": {"store", "checkpoint", "eval", "store_content", "checkpoint_sha256", "checkpoint_step"}}``
  (``n < N`` when fewer samples were evaluated; paths resolved). Format 1 (no ``fusion``, no
  ``source``) is still read: its examples were fused with β = 2 at the x-ray's resolution;
* ``title`` (n,): each row's label, ``"<species> sample <k>"``;
* ``row<i>_<key>`` for ``key`` in ``xray`` (S, S), and the view volumes (D, s, s) on the network's
  output grid ``ours`` (fused as evaluated), ``truth``, ``mean``, ``nn``, ``oracle`` (those present);
* ``row<i>_ours_full`` (D, S, S): ours at the x-ray's resolution (the applications' volume): fused
  there (``fusion_at`` ``xray``), or fused on the target grid and up-sampled laterally (``target``);
* ``fusion_xray``, ``fusion_fused``, ``fusion_nofusion``: Fig. 9's example (the first row;
  ``fused`` is its ``ours_full``; in memory its ``settings`` are meta's ``fusion``, Fig. 9's label).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomodata.files import atomic_write, load_npz
from tomodata.store import open_store

from .checkpoint import model_from_checkpoint
from .data import resize_xrays
from .eval_phases import _fuse_batch
from .eval_source import (
    DEFAULT_FUSION,
    check_examples_source,
    check_source,
    fusion_settings,
    read_summary,
    source_record,
)
from .fusion import fuse, upsample_lateral
from .names import EVAL_MATCHES
from .sources import ViewSource, mean_volume

__all__ = ["examples_for", "load_examples", "qualitative_examples", "save_examples", "write_examples"]

FORMAT = 2
#: the formats :func:`load_examples` reads (1: before ``fusion`` and ``source`` were recorded)
FORMATS = (1, 2)
#: a row's arrays in the file, in the order of qualitative_examples' rows (``title`` is separate)
ROW_KEYS = ("xray", "ours", "truth", "mean", "nn", "oracle")
FUSION_KEYS = ("xray", "fused", "nofusion")


def save_examples(ex: dict, path, *, requested: int) -> Path:
    """Write ``ex`` (:func:`qualitative_examples`' dict, made for ``requested`` rows)
    to ``path`` (.npz), atomically (a temporary file renamed); returns the path."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"the examples file must end in .npz, got {path}")
    rows = ex["rows"]
    arrays: dict[str, Any] = {  # Any: numpy's stubs type savez's **kwds like its allow_pickle flag
        "meta": np.array(json.dumps(_meta(ex, requested))),
        "title": np.array([str(r["title"]) for r in rows]),
    }
    for i, (row, full) in enumerate(zip(rows, ex["ours_full"], strict=True)):
        arrays |= {f"row{i}_{k}": np.asarray(row[k]) for k in ROW_KEYS if row.get(k) is not None}
        arrays[f"row{i}_ours_full"] = np.asarray(full)
    if ex.get("fusion") is not None:
        arrays |= {f"fusion_{k}": np.asarray(ex["fusion"][k]) for k in FUSION_KEYS}

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
            np.savez_compressed(fh, **arrays)

    return atomic_write(path, write)


def _meta(ex: dict, requested: int) -> dict:
    """The file's ``meta``: format, rows, and the examples' ``fusion`` and ``source`` where ``ex`` has them."""
    known = {k: v for k, v in (ex.get("meta") or {}).items() if k in ("fusion", "source")}
    return {"format": FORMAT, "requested": int(requested), "rows": len(ex["rows"])} | known


def load_examples(path, n: int | None = None) -> dict:
    """The first ``n`` (default all) examples of a file of :func:`save_examples`, as
    :func:`qualitative_examples` returns them: ``{"rows", "fusion", "ours_full", "meta"}`` (``meta``:
    the file's, ``fusion`` β = 2 at the x-ray's resolution for a format-1 file).

    ``ValueError`` when the file lacks an array or was made for fewer than ``n`` rows while more
    samples were evaluated (``tomo examples --examples`` must be at least ``n``)."""
    path = Path(path)
    what = "an examples file (.npz written by tomo examples)"
    data = load_npz(path, what)
    try:
        meta = json.loads(str(data["meta"]))
        titles = [str(t) for t in data["title"]]
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path} is not {what}: {type(e).__name__}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") not in FORMATS or meta.get("rows") != len(titles):
        raise ValueError(f"{path}: unknown examples file format {meta}")
    if n is not None and n > len(titles) and len(titles) == meta["requested"]:
        raise ValueError(
            f"{path} holds {len(titles)} examples, {n} were asked for: make it with tomo examples --examples {n}"
        )
    keep = len(titles) if n is None else min(int(n), len(titles))
    rows, fulls = [], []
    for i in range(keep):
        if f"row{i}_xray" not in data or f"row{i}_ours_full" not in data:
            raise ValueError(f"{path}: row {i} lacks its x-ray or ours_full")
        row = {k: data[f"row{i}_{k}"] for k in ROW_KEYS if f"row{i}_{k}" in data}
        rows.append(row | {"title": titles[i]})
        fulls.append(data[f"row{i}_ours_full"])
    fusion: dict[str, Any] | None = {k: data[f"fusion_{k}"] for k in FUSION_KEYS} if "fusion_xray" in data else None
    if meta["format"] == 1:
        meta["fusion"] = dict(DEFAULT_FUSION)
    if fusion is not None and "fusion" in meta:
        fusion["settings"] = dict(meta["fusion"])  # Fig. 9's label
    return dict(rows=rows, fusion=fusion if rows else None, ours_full=fulls, meta=meta)


def write_examples(store, checkpoint, eval_dir, out, *, n: int = 4, device="cpu") -> Path:
    """``tomo examples``: the first ``n`` qualitative examples of an evaluated run, computed
    (:func:`qualitative_examples`, fused as evaluated) and saved to ``out`` (.npz)."""
    if Path(out).suffix != ".npz":
        raise ValueError(f"the examples file must end in .npz, got {out}")
    return save_examples(qualitative_examples(store, checkpoint, eval_dir, n=n, device=device), out, requested=n)


def examples_for(examples_file, store, checkpoint, eval_dir, *, n: int, device="cpu") -> dict | None:
    """The examples of ``tomo figures`` / ``tomo apps``: the first ``n`` of ``examples_file``, or
    computed from ``store``, ``checkpoint`` and ``eval_dir``; None when neither is given. A file
    drawn beside ``eval_dir`` must have been made from it (:func:`model.eval_source.check_examples_source`)."""
    if examples_file is not None:
        if checkpoint is not None or store is not None:
            raise ValueError("give --examples-file or the store and --checkpoint (to compute the examples), not both")
        ex = load_examples(examples_file, n)
        if eval_dir is not None:
            check_examples_source(ex["meta"], examples_file, eval_dir)
        return ex
    if checkpoint is None:
        if store is not None:  # else the figures that need examples would be left out in silence
            raise ValueError("the store alone gives no examples: add --checkpoint (or give --examples-file)")
        return None
    if store is None or eval_dir is None:
        raise ValueError("computing the examples needs the store, --checkpoint and --eval")
    return qualitative_examples(store, checkpoint, eval_dir, n=n, device=device)


def _chosen(eval_dir, n: int) -> tuple[list[dict], list[dict]]:
    """The rows of ``eval_dir/matches.csv`` and the first ``n`` examples among them: the first sample
    of each species, then further ones in the file's order."""
    if not Path(eval_dir).is_dir():
        raise ValueError(f"eval folder {eval_dir} does not exist (tomo evaluate writes it)")
    with open(Path(eval_dir) / EVAL_MATCHES, newline="") as fh:
        matches = list(csv.DictReader(fh))
    if not matches:
        raise ValueError(f"{eval_dir}/matches.csv has no rows")
    firsts, seen = [], set()
    for r in matches:
        if r["species"] not in seen:
            seen.add(r["species"])
            firsts.append(r)
    return matches, (firsts + [r for r in matches if r not in firsts])[:n]


def _fused(raw: np.ndarray, x: np.ndarray, size: int, fusion: dict, chi: float) -> tuple[np.ndarray, np.ndarray]:
    """``ours`` (D, size, size) fused as evaluated (``fusion``: beta, fusion_at; as
    :func:`model.eval_phases._fuse_batch`) and ours at the x-ray's resolution (D, H, W): fused there
    (``xray``), or the target-grid fusion up-sampled laterally (``target``)."""
    beta, at = fusion["beta"], fusion["fusion_at"]
    if at == "xray":
        full = fuse(raw, x, beta=beta, chi=chi)
        return resize_xrays(torch.from_numpy(np.ascontiguousarray(full))[None], size)[0].numpy(), full
    ours = _fuse_batch(torch.from_numpy(raw)[None], x[None], size=size, fusion_at=at, beta=beta, chi=chi)[0].numpy()
    return ours, upsample_lateral(ours, x.shape)


def _open_checked(store, checkpoint, eval_dir, summary: dict, held: list[str]):
    """The store and the model (CPU) with its checkpoint, refused unless they and ``eval_dir`` belong
    together (:func:`model.eval_source.check_source`) and the store has every evaluated species."""
    ds = open_store(store)
    model, state = model_from_checkpoint(checkpoint, map_location="cpu")
    check_source(summary, eval_dir, store, checkpoint, ds=ds, state=state, species=held)
    unknown = [n for n in held if n not in ds.species_names()]
    if unknown:
        raise ValueError(f"{eval_dir}/matches.csv names species {unknown} that the store {store} lacks")
    return ds, model, state


def qualitative_examples(store, checkpoint, eval_dir, *, n: int = 4, device="cpu") -> dict:
    """Volumes for the qualitative figures from an evaluated run (its ``matches.csv``).

    Picks up to ``n`` evaluated held-out samples (the first of each species, then further ones; the
    species are those of ``matches.csv``, whatever split was evaluated) and returns ``{"rows": [...],
    "fusion": {...}, "ours_full": [...], "meta": {"fusion", "source"}}``: rows for
    :func:`model.figures.fig_qualitative` (``xray`` (S, S), ``ours``, ``truth``, ``nn``, ``oracle``,
    ``mean`` (D, s, s) on the network's output grid, as evaluated, ``title``), a fusion example for
    :func:`model.figures.fig_fusion` (``xray``, ``fused`` = the first ``ours_full``, ``nofusion``) and,
    per row, ours at the x-ray's resolution (D, S, S) (the applications' volume). ``ours`` is fused with
    the evaluation's β and ``fusion_at`` (summary.json's settings; ``meta["fusion"]``).

    ValueError when the store, checkpoint and eval folder do not belong together (module docstring).
    """
    matches, chosen = _chosen(eval_dir, n)
    summary = read_summary(eval_dir)
    fusion = fusion_settings(summary)
    held = list(dict.fromkeys(r["species"] for r in matches))  # the evaluated species
    ds, model, state = _open_checked(store, checkpoint, eval_dir, summary, held)
    net = model.config
    D, S = int(net.out_depth), int(net.out_size)
    chi = ds.settings.chi
    train = ds.species_names("train")
    held_src, train_src = ViewSource(ds, held, device=device), ViewSource(ds, train, device=device)
    mean_vol = torch.from_numpy(mean_volume(ds, train)).to(device)
    rows, fulls, fusion_example = [], [], None
    with torch.no_grad():
        for r in chosen:
            g = held_src.at(r["species"], int(r["sample"]))
            x = ds.images(r["species"], int(r["sample"]))
            raw = model(resize_xrays(torch.from_numpy(x)[None, None], net.input_size)).float()[0].numpy()
            ours, fused_full = _fused(raw, x, S, fusion, chi)
            row = dict(
                xray=x,
                ours=ours,
                truth=held_src.views([g], size=S, depth=D)[0].cpu().numpy(),
                title=f"{r['species']} sample {r['sample']}",
            )
            row["mean"] = held_src.views([g], size=S, depth=D, volume=mean_vol)[0].cpu().numpy()
            for key in ("nn", "oracle"):
                if r.get(f"{key}_species"):
                    gk = train_src.at(r[f"{key}_species"], int(r[f"{key}_sample"]))
                    row[key] = train_src.views([gk], size=S, depth=D)[0].cpu().numpy()
            rows.append(row)
            fulls.append(fused_full)
            if fusion_example is None:
                nofusion = upsample_lateral(raw, x.shape)  # as_density, then resized
                fusion_example = dict(xray=x, fused=fused_full, nofusion=nofusion, settings=dict(fusion))
    meta = dict(fusion=fusion, source=source_record(store, checkpoint, eval_dir, ds=ds, state=state))
    return dict(rows=rows, fusion=fusion_example, ours_full=fulls, meta=meta)
