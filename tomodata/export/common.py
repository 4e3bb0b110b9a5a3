"""What every part of an export shares: the spec id, split names, array names, safe paths, the citation,
the export time, the code version, URL checks and the JSON text convention."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from ..code_version import code_version as code_version
from ..run_layout import STORE_NAME, store_in
from ..splits import SPLITS
from ..store.layout import ome_multiscales

EXPORT_SPEC = "tomo-export/1"
SPLIT_NAMES = SPLITS  # the export's name for them
_ARRAYS = ("volume", "rotations", "mirrored", "views", "images")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_.][A-Za-z0-9_./-]*$")

CITATION_BIBTEX = """@article{henzler2018singleimage,
  title     = {Single-image Tomography: 3D Volumes from 2D Cranial X-Rays},
  author    = {Henzler, Philipp and Rasche, Volker and Ropinski, Timo and Ritschel, Tobias},
  journal   = {Computer Graphics Forum},
  volume    = {37},
  number    = {2},
  pages     = {377--388},
  year      = {2018},
  publisher = {The Eurographics Association and John Wiley \\& Sons Ltd.},
  doi       = {10.1111/cgf.13369}
}"""


def _now() -> _dt.datetime:
    """Export time (UTC); ``SOURCE_DATE_EPOCH`` pins it for reproducible exports."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch and epoch.strip().isdigit():
        return _dt.datetime.fromtimestamp(int(epoch), tz=_dt.UTC)
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0)


def _json_text(obj) -> str:
    """The export's JSON files: indent 2, keys in insertion order, UTF-8 text, no NaN, final newline."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, allow_nan=False) + "\n"


def _check_url(url: str | None, name: str) -> str | None:
    """``url`` if it is an absolute http(s) URL (or None); ``ValueError`` naming ``name`` otherwise."""
    if url is None:
        return None
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in str(url)):
        raise ValueError(f"{name} must be an absolute http(s) URL (https://host/path), got {url!r}")
    return str(url)


def _resolve_store(store) -> Path:
    """The store's folder: ``store`` itself, or ``store/dataset.zarr`` (a ``build-demo`` output folder)."""
    found = store_in(store)
    if found is None:
        raise FileNotFoundError(f"{store} is not a dataset store (no zarr.json in it or in {Path(store) / STORE_NAME})")
    return found


def volume_levels(attrs: dict) -> int:
    """How many OME-Zarr levels a species' volume has in a store of root attributes ``attrs``
    (:func:`tomodata.store.layout.ome_multiscales`: 2 for an even size of at least 8, else 1)."""
    return len(ome_multiscales("v", int(attrs["volume_size"]), None)["multiscales"][0]["datasets"])
