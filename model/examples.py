"""The qualitative examples: the network's predictions on chosen held-out samples, computed once and
shared by the figures (Figs. 5/17, 7 and Fig. 9's example row) and the applications.

``tomo examples`` (the workflow's rule ``examples``) runs :func:`qualitative_examples`
(the first evaluated sample of each species, then further ones, from the eval folder's
``matches.csv``) and writes them to one ``.npz`` file; ``tomo figures --examples-file`` and
``tomo apps --examples-file`` read its first rows. The picks do not depend on how many are asked for,
so the first ``n`` rows of a file made for ``N >= n`` are those a run for ``n`` would make.

File (``numpy.savez_compressed``, no pickles; every array as computed, dtypes kept):

* ``meta``: JSON text ``{"format": 1, "requested": N, "rows": n}`` (``n < N`` when fewer samples
  were evaluated);
* ``title`` (n,): each row's label, ``"<species> sample <k>"``;
* ``row<i>_<key>`` for ``key`` in ``xray`` (S, S), and the view volumes (D, s, s) on the network's
  output grid ``ours``, ``truth``, ``mean``, ``nn``, ``oracle`` (those present);
* ``row<i>_ours_full`` (D, S, S): ours fused at the x-ray's resolution (the applications' volume);
* ``fusion_xray``, ``fusion_fused``, ``fusion_nofusion``: Fig. 9's example (the first row).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomodata.files import load_npz
from tomodata.store import open_store

from .checkpoint import model_from_checkpoint
from .data import resize_xrays
from .fusion import fuse, upsample_lateral
from .sources import ViewSource, mean_volume

__all__ = ["examples_for", "load_examples", "qualitative_examples", "save_examples", "write_examples"]

FORMAT = 1
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
        "meta": np.array(json.dumps({"format": FORMAT, "requested": int(requested), "rows": len(rows)})),
        "title": np.array([str(r["title"]) for r in rows]),
    }
    for i, (row, full) in enumerate(zip(rows, ex["ours_full"], strict=True)):
        arrays |= {f"row{i}_{k}": np.asarray(row[k]) for k in ROW_KEYS if row.get(k) is not None}
        arrays[f"row{i}_ours_full"] = np.asarray(full)
    if ex.get("fusion") is not None:
        arrays |= {f"fusion_{k}": np.asarray(ex["fusion"][k]) for k in FUSION_KEYS}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_examples(path, n: int | None = None) -> dict:
    """The first ``n`` (default all) examples of a file of :func:`save_examples`, as
    :func:`qualitative_examples` returns them: ``{"rows", "fusion", "ours_full"}``.

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
    if meta.get("format") != FORMAT or meta.get("rows") != len(titles):
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
    fusion = {k: data[f"fusion_{k}"] for k in FUSION_KEYS} if "fusion_xray" in data else None
    return dict(rows=rows, fusion=fusion if rows else None, ours_full=fulls)


def write_examples(store, checkpoint, eval_dir, out, *, n: int = 4, device="cpu") -> Path:
    """``tomo examples``: the first ``n`` qualitative examples of an evaluated run, computed
    (:func:`qualitative_examples`, fusion β = 2) and saved to ``out`` (.npz)."""
    if Path(out).suffix != ".npz":
        raise ValueError(f"the examples file must end in .npz, got {out}")
    return save_examples(qualitative_examples(store, checkpoint, eval_dir, n=n, device=device), out, requested=n)


def examples_for(examples_file, store, checkpoint, eval_dir, *, n: int, device="cpu") -> dict | None:
    """The examples of ``tomo figures`` / ``tomo apps``: the first ``n`` of ``examples_file``, or
    computed from ``store``, ``checkpoint`` and ``eval_dir``; None when neither is given."""
    if examples_file is not None:
        if checkpoint is not None or store is not None:
            raise ValueError("give --examples-file or the store and --checkpoint (to compute the examples), not both")
        return load_examples(examples_file, n)
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
    with open(Path(eval_dir) / "matches.csv", newline="") as fh:
        matches = list(csv.DictReader(fh))
    if not matches:
        raise ValueError(f"{eval_dir}/matches.csv has no rows")
    firsts, seen = [], set()
    for r in matches:
        if r["species"] not in seen:
            seen.add(r["species"])
            firsts.append(r)
    return matches, (firsts + [r for r in matches if r not in firsts])[:n]


def qualitative_examples(store, checkpoint, eval_dir, *, n: int = 4, beta: float = 2.0, device="cpu") -> dict:
    """Volumes for the qualitative figures from an evaluated run (its ``matches.csv``).

    Picks up to ``n`` evaluated held-out samples (the first of each species, then further ones; the
    species are those of ``matches.csv``, whatever split was evaluated) and
    returns ``{"rows": [...], "fusion": {...}, "ours_full": [...]}``: rows for
    :func:`model.figures.fig_qualitative` (``xray`` (S, S), ``ours``, ``truth``, ``nn``, ``oracle``,
    ``mean`` (D, s, s) on the network's output grid, as evaluated, ``title``), a fusion example for
    :func:`model.figures.fig_fusion` (``xray``, ``fused`` at the x-ray's resolution, ``nofusion``) and,
    per row, ours fused at the x-ray's resolution (D, S, S) (the applications' volume).
    """
    matches, chosen = _chosen(eval_dir, n)
    ds = open_store(store)
    model, _ = model_from_checkpoint(checkpoint, map_location="cpu")
    net = model.config
    D, S = int(net.out_depth), int(net.out_size)
    chi = ds.settings.chi
    held = list(dict.fromkeys(r["species"] for r in matches))  # the evaluated species
    train = ds.species_names("train")
    unknown = [n for n in held if n not in ds.species_names()]
    if unknown:
        raise ValueError(f"{eval_dir}/matches.csv names species {unknown} that the store {store} lacks")
    held_src, train_src = ViewSource(ds, held, device=device), ViewSource(ds, train, device=device)
    mean_vol = torch.from_numpy(mean_volume(ds, train)).to(device)
    spp = ds.settings.samples_per_species
    rows, fulls, fusion_example = [], [], None
    with torch.no_grad():
        for r in chosen:
            g = held.index(r["species"]) * spp + int(r["sample"])
            x = ds.images(r["species"], int(r["sample"]))
            raw = model(resize_xrays(torch.from_numpy(x)[None, None], net.input_size)).float()[0].numpy()
            fused_full = fuse(raw, x, beta=beta, chi=chi)
            ours = resize_xrays(torch.from_numpy(np.ascontiguousarray(fused_full))[None], S)[0].numpy()
            row = dict(
                xray=x,
                ours=ours,
                truth=held_src.views([g], size=S, depth=D)[0].cpu().numpy(),
                title=f"{r['species']} sample {r['sample']}",
            )
            row["mean"] = held_src.views([g], size=S, depth=D, volume=mean_vol)[0].cpu().numpy()
            if r.get("nn_species"):
                gn = train.index(r["nn_species"]) * spp + int(r["nn_sample"])
                row["nn"] = train_src.views([gn], size=S, depth=D)[0].cpu().numpy()
            if r.get("oracle_species"):
                go = train.index(r["oracle_species"]) * spp + int(r["oracle_sample"])
                row["oracle"] = train_src.views([go], size=S, depth=D)[0].cpu().numpy()
            rows.append(row)
            fulls.append(fused_full)
            if fusion_example is None:
                fusion_example = dict(
                    xray=x, fused=fused_full, nofusion=upsample_lateral(np.clip(raw, 0.0, 1.0), x.shape)
                )
    return dict(rows=rows, fusion=fusion_example, ours_full=fulls)
