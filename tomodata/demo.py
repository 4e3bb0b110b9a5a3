"""The embedded demo data: procedural skull species written as UTCT-like slice movies + a manifest.

The demo goes through the same path as real UTCT data (movie → fetch via file:// → decode → cube →
render), so every stage of the pipeline runs offline on a fresh clone. Each species is one specimen:
a procedural skull (:mod:`tomodata.phantoms`) at ``movie_size``³, quantised to 8 bit (value = round(µ ·
255), the paper's linear-density assumption read backwards) and written one z slice per frame.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from .files import atomic_write, json_sha256, write_text
from .manifest import COLUMNS
from .phantoms import FIT_RADIUS, skull_volume, species_name, species_params
from .previews import to_png

# codec name -> (fourcc, container suffix); all written by opencv-python-headless's FFmpeg
MOVIE_CODECS = {"mp4v": ("mp4v", ".mp4"), "mjpg": ("MJPG", ".avi"), "ffv1": ("FFV1", ".mkv")}
DEMO_LICENCE = "procedural (tomodata.phantoms): free, no restrictions"


DEMO_SETTINGS_PREFIX = "data.demo: "  # ends the manifest's first line: the settings it was made with (JSON)


def write_slice_movie(volume_u8: np.ndarray, path: str | Path, *, codec: str = "mp4v", fps: float = 25.0) -> Path:
    """Write a (Z, Y, X) uint8 volume as a grey slice movie, frame k = slice z = k.

    The file is written under a temporary name and renamed when complete. Returns the path.
    """
    vol = np.asarray(volume_u8)
    if vol.ndim != 3 or vol.dtype != np.uint8:
        raise ValueError(f"need a (Z, Y, X) uint8 volume, got {vol.shape} {vol.dtype}")
    if codec not in MOVIE_CODECS:
        raise ValueError(f"codec must be one of {sorted(MOVIE_CODECS)}, got {codec!r}")
    fourcc, suffix = MOVIE_CODECS[codec]
    path = Path(path)
    if path.suffix.lower() != suffix:
        raise ValueError(f"codec {codec} writes {suffix} files, got {path.name}")
    h, w = vol.shape[1:]

    def write(tmp: Path) -> None:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*fourcc), fps, (w, h), True)
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {codec} ({fourcc}) movies here")
        try:
            for sl in vol:
                writer.write(cv2.cvtColor(sl, cv2.COLOR_GRAY2BGR))
        finally:
            writer.release()

    return atomic_write(path, write)


def phantom_spacing_mm(params, size: int) -> float:
    """Approximate isotropic voxel spacing (mm) of a phantom at ``size``³: the skull length spans
    about the ball's diameter 2 · FIT_RADIUS of the cube's 2 normalised units."""
    return float(params.skull_length_mm) / (2.0 * FIT_RADIUS) * 2.0 / size


def demo_name(species_id: int) -> str:
    """The id of procedural species ``species_id`` in manifests and stores: ``procedural_07``
    (:func:`tomodata.phantoms.species_name`)."""
    return species_name(species_id)


def demo_splits(n_species: int, *, val: int, test: int = 0) -> list[str]:
    """Splits of the demo's species 0 … n_species−1, in order: ``train``, then ``val``, then ``test``.

    The last ``test`` species are the test split (only ever used for the reported result), the
    ``val`` species before them the validation split (model choice, tuning), the rest ``train``. The
    one home of this rule: the workflow, ``tomo build-demo`` and ``tomo demo-movies`` call it.
    Adding test species at the end leaves every earlier species and split unchanged (a species'
    parameters depend only on its number and the seed).
    """
    if n_species < 1 or val < 0 or test < 0 or val + test >= n_species:
        raise ValueError(
            f"the demo needs at least one train species: {n_species} species, val {val}, test {test} "
            f"(val + test must be < species, each >= 0)"
        )
    return [
        "test" if k >= n_species - test else "val" if k >= n_species - test - val else "train" for k in range(n_species)
    ]


# the manifest columns a demo row fills: the manifest's own, from ``id`` through ``notes`` (the
# per-row ingest options after them stay empty); their order is the written file's
DEMO_COLUMNS = COLUMNS[: COLUMNS.index("notes") + 1]


def demo_rows(
    n_species: int,
    *,
    val: int,
    test: int = 0,
    movie_size: int = 160,
    codec: str = "mp4v",
    seed: int = 0,
    species_ids: list[int] | None = None,
) -> list[dict]:
    """The demo manifest's rows (dicts of :data:`DEMO_COLUMNS`), without writing anything: what
    :func:`write_demo_movies` writes, known before the movies exist (the workflow reads it at parse time).
    Sources are relative to the manifest's folder."""
    ids = species_ids if species_ids is not None else list(range(n_species))
    splits = demo_splits(len(ids), val=val, test=test)
    rows = []
    for k, sid in enumerate(ids):
        params = species_params(sid, seed=seed)
        name = demo_name(sid)
        sp = phantom_spacing_mm(params, movie_size)
        digest = json_sha256(params.as_dict())[:12]
        rows.append(
            dict(
                zip(
                    DEMO_COLUMNS,
                    [
                        name,
                        f"procedural species {sid}",
                        f"movies/{name}{MOVIE_CODECS[codec][1]}",
                        "movie",
                        f"{sp:.6g},{sp:.6g},{sp:.6g}",
                        "z",
                        splits[k],
                        DEMO_LICENCE,
                        "",
                        f"tomodata.phantoms species {sid} seed {seed}, params {digest}",
                    ],
                )
            )
        )
    return rows


def write_demo_movies(
    out_dir: str | Path,
    *,
    n_species: int = 24,
    val: int = 4,
    test: int = 0,
    movie_size: int = 160,
    codec: str = "mp4v",
    seed: int = 0,
    species_ids: list[int] | None = None,
) -> Path:
    """Write ``n_species`` procedural species as slice movies and a manifest ``manifest.tsv``.

    Splits by :func:`demo_splits` (the last ``test`` species ``test``, the ``val`` before them
    ``val``, the rest ``train``). Sources are paths relative to the manifest. Returns the manifest's
    path. Existing movies with the same content are rewritten identically (deterministic), so
    re-running changes nothing downstream.
    """
    if movie_size % 2:  # the video writers keep even frame sizes: an odd one lost a row and a column
        raise ValueError(f"movie_size must be even (video frames have even sizes), got {movie_size}")
    ids = species_ids if species_ids is not None else list(range(n_species))
    out = Path(out_dir)
    movies = out / "movies"
    movies.mkdir(parents=True, exist_ok=True)
    rows = demo_rows(len(ids), val=val, test=test, movie_size=movie_size, codec=codec, seed=seed, species_ids=ids)
    for sid, row in zip(ids, rows):
        params = species_params(sid, seed=seed)
        vol = skull_volume(params, size=movie_size, seed=seed)
        u8 = to_png(vol)
        write_slice_movie(u8, out / row["source"], codec=codec)
    cells = [[r[c] for c in DEMO_COLUMNS] for r in rows]
    manifest = out / "manifest.tsv"
    made = dict(species=len(ids), val=val, test=test, movie_size=movie_size, codec=codec, seed=seed)
    text = "# demo manifest: procedural skull species written as slice movies by `tomo demo-movies`"
    text += f"; {DEMO_SETTINGS_PREFIX}{json.dumps(made, sort_keys=True)}\n"
    text += "\t".join(DEMO_COLUMNS) + "\n" + "".join("\t".join(r) + "\n" for r in cells)
    return write_text(manifest, text)
