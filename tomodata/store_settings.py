"""The settings that fix every species' data in a dataset store, typed: one home for reading them
from a store's attributes, writing and reading them as JSON (``tomo store-settings``, the
workflow's settings file) and checking them.

A store's root attributes spell them ``chi``, ``steps``, ``image_size``, ``volume_size``,
``n_views``, ``samples_per_species`` (= 2 · n_views), ``view_scheme.seed``, ``view_scheme.sets``
(absent before session 30: ``"shared"``) and ``encoding.images.dtype`` (docs/store.md);
:meth:`StoreSettings.from_attrs` reads exactly these. ``view_sets`` at its default (``"shared"``) is
left out of the JSON record and the command-line options, so that a settings file or a job's command
written before the setting existed is still the same setting.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from .views import DEFAULT_VIEW_SETS, VIEW_SETS, SampleIndex, species_views, view_sets_of

__all__ = ["StoreSettings", "IMAGE_ENCODINGS", "number_problems"]

#: how the x-rays are stored (tomodata.store.encode_images)
IMAGE_ENCODINGS = ("uint16", "float16")


#: the integer settings, spelt as in a store's attributes (samples_per_species only there)
INTEGER_KEYS = ("steps", "image_size", "volume_size", "n_views", "samples_per_species")


def number_problems(values) -> list[str]:
    """``chi`` a positive number and each of :data:`INTEGER_KEYS` present a positive integer, in
    ``values`` (a store's attributes or :class:`StoreSettings` as a dict); one line per problem."""
    out = []
    chi = values.get("chi")
    if isinstance(chi, bool) or not isinstance(chi, (int, float)) or not (math.isfinite(chi) and chi > 0):
        out.append(f"chi must be a positive number, got {chi!r}")
    for k in INTEGER_KEYS:
        v = values.get(k, 1)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            out.append(f"{k} must be a positive integer, got {v!r}")
    return out


def float_text(v) -> str:
    """The shortest text that reads back as the same float (repr), without a trailing ".0"."""
    r = repr(float(v))
    return r[:-2] if r.endswith(".0") else r


#: the command-line flag of each setting (tomo store-create, tomo store-settings, a recipe's rebuild.sh)
FLAGS = {
    "n_views": "--views",
    "view_seed": "--seed",
    "view_sets": "--view-sets",
    "image_size": "--size",
    "steps": "--steps",
    "chi": "--chi",
    "volume_size": "--volume-size",
    "image_encoding": "--encoding",
}


@dataclass(frozen=True)
class StoreSettings:
    """Rendering constants (docs/geometry.md) and the view set of a store.

    chi: opacity scale χ; steps: samples per ray; image_size: x-ray side S (pixels);
    volume_size: canonical cube side (voxels); n_views: views per species (each also mirrored);
    view_seed: seed of ``tomodata.views.hemisphere_views``; view_sets: ``"shared"`` (every species from
    the same views) or ``"per_species"`` (``tomodata.views.species_views``); image_encoding: ``uint16``
    or ``float16``.
    """

    chi: float = 10.0
    steps: int = 128
    image_size: int = 256
    volume_size: int = 128
    n_views: int = 1332
    view_seed: int = 0
    image_encoding: str = "uint16"
    view_sets: str = DEFAULT_VIEW_SETS

    def __post_init__(self):
        for f in dataclasses.fields(self):  # numpy scalars (e.g. from an array) taken as Python numbers
            value = getattr(self, f.name)
            if isinstance(value, np.generic):
                object.__setattr__(self, f.name, value.item())
        problems = self.problems()
        if problems:
            raise ValueError("store settings: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these settings, one line each (empty when they are usable)."""
        out = number_problems(dataclasses.asdict(self))
        if isinstance(self.view_seed, bool) or not isinstance(self.view_seed, int) or self.view_seed < 0:
            out.append(f"view_seed must be an integer >= 0, got {self.view_seed!r}")
        if self.view_sets not in VIEW_SETS:
            out.append(f"view_sets must be one of {list(VIEW_SETS)}, got {self.view_sets!r}")
        if self.image_encoding not in IMAGE_ENCODINGS:
            out.append(f"image_encoding must be one of {list(IMAGE_ENCODINGS)}, got {self.image_encoding!r}")
        return out

    @property
    def samples_per_species(self) -> int:
        """Samples per species: every view and its mirror."""
        return 2 * self.n_views

    def species_rotations(self, name: str) -> np.ndarray:
        """(n_views, 3, 3) float64: the rotations species ``name`` is rendered from in a store of these
        settings (:func:`tomodata.views.species_views`)."""
        return species_views(self.n_views, seed=self.view_seed, name=name, view_sets=self.view_sets)

    @property
    def sample_index(self) -> SampleIndex:
        """The samples ↔ (view, mirrored) map of every species (:class:`tomodata.views.SampleIndex`)."""
        return SampleIndex(self.n_views)

    @classmethod
    def from_attrs(cls, attrs) -> StoreSettings:
        """The settings recorded in a store's root attributes (``ValueError`` naming what is wrong)."""
        try:
            s = cls(
                chi=attrs["chi"],
                steps=attrs["steps"],
                image_size=attrs["image_size"],
                volume_size=attrs["volume_size"],
                n_views=attrs["n_views"],
                view_seed=attrs["view_scheme"]["seed"],
                image_encoding=attrs["encoding"]["images"]["dtype"],
                view_sets=view_sets_of(attrs["view_scheme"]),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"store settings: the store's attributes lack {e}") from None
        if attrs.get("samples_per_species") != s.samples_per_species:
            raise ValueError(
                f"store settings: samples_per_species {attrs.get('samples_per_species')!r} "
                f"is not 2 · n_views = {s.samples_per_species}"
            )
        return s

    @classmethod
    def from_cli(cls, args) -> StoreSettings:
        """Settings from parsed ``tomo store-create`` / ``tomo store-settings`` options (an argparse
        namespace whose attributes are the :data:`FLAGS` without dashes: ``views``, ``seed``, ...)."""
        values = {name: getattr(args, flag[2:].replace("-", "_")) for name, flag in FLAGS.items()}
        return cls(**values | {"chi": float(values["chi"])})

    def cli_options(self) -> list[str]:
        """The settings as ``tomo store-create`` / ``tomo store-settings`` options, in :data:`FLAGS`
        order (``["--views", "1332", "--seed", "0", ...]``); χ as the shortest text that reads back as
        the same float ("10", "7.5"); ``--view-sets`` only where it is not ``shared`` (module docstring)."""
        values = self.to_json() | {"chi": float_text(self.chi)}
        return [str(x) for name, flag in FLAGS.items() if name in values for x in (flag, values[name])]

    def to_json(self) -> dict:
        """The settings as JSON (the ``tomo store-settings`` file; :meth:`from_json` reads it back);
        ``view_sets`` only where it is not ``shared`` (module docstring)."""
        out = dataclasses.asdict(self)
        if out["view_sets"] == DEFAULT_VIEW_SETS:
            del out["view_sets"]
        return out

    @classmethod
    def from_json(cls, obj: dict) -> StoreSettings:
        """Settings from :meth:`to_json`'s dict (a ``spec_version`` key is allowed and ignored);
        unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(obj) - names - {"spec_version"})
        if unknown:
            raise ValueError(f"store settings: unknown keys {unknown} (known: {sorted(names)})")
        return cls(**{k: v for k, v in obj.items() if k in names})
