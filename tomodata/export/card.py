"""The export's dataset card ``README.md``: YAML front matter (Hugging Face style), then one section per
topic: warnings, overview, licence and terms, contents, layout, verify, rebuild, citation, provenance."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from ..run_layout import STORE_NAME
from ..views import SPECIES_SEED_RECIPE, VIEW_SCHEME, VIEW_SCHEME_RECIPE, view_sets_of
from .common import CITATION_BIBTEX, EXPORT_SPEC, SPLIT_NAMES, volume_levels
from .licence import _CONDITIONS, ATTRIBUTION, FREE, NO_DERIVATIVES, RESTRICTED


def _size_category(n: int) -> str:
    """Hugging Face's size category of ``n`` samples ("n<1K", "1K<n<10K", ..., "n>1B")."""
    bounds = [
        (1_000, "n<1K"),
        (10_000, "1K<n<10K"),
        (100_000, "10K<n<100K"),
        (1_000_000, "100K<n<1M"),
        (10_000_000, "1M<n<10M"),
        (100_000_000, "10M<n<100M"),
        (1_000_000_000, "100M<n<1B"),
    ]
    for b, name in bounds:
        if n < b:
            return name
    return "n>1B"


def _conditions_text(table: list[dict], classes: dict) -> list[str]:
    """Card lines for the conditions of open licences (attribution, non-commercial, no derivatives),
    one per condition."""
    says = {
        "BY": "Credit each as the table's credit column says, link its licence, and say that the data "
        "were changed: the cubes are the scans resampled to a cube and windowed to densities, the x-rays "
        "are rendered from them (section Geometry).",
        "NC": "Data of these species, and anything made from them, may not be used commercially.",
        "ND": "The licence forbids sharing adaptations; check its terms before publishing data of these species.",
    }
    lines = []
    for tag, cond in _CONDITIONS:
        names = [e["name"] for e in table if cond in (classes[e["name"]].get("conditions") or [])]
        if names:
            ids = ", ".join(sorted({classes[n]["spdx"] for n in names}))
            lines += [f"> **{cond.split(':')[0].capitalize()}** ({ids}): {', '.join(names)}. {says[tag]}", ""]
    return lines


def _cell(text: str) -> str:
    """``text`` for a Markdown table cell (a ``|`` escaped)."""
    return text.replace("|", "\\|")


def _subject(all_free: bool) -> str:
    """What the x-rays show: procedural skulls (every species generated, no scan) or mammal skulls."""
    return "procedural skull" if all_free else "mammal skull"


def _front_matter(*, lic: dict, recipe_only: bool, all_free: bool, n_samples_total: int) -> str:
    """The YAML front matter (licence, name, task, size, tags), without the ``---`` fences."""
    front: dict[str, Any] = {"license": lic["hf"]}
    if lic["name"]:
        front["license_name"] = lic["name"]
        front["license_details"] = (
            "Recipe files: CC0-1.0. The data they rebuild are under each source's terms (see species.csv)."
            if recipe_only
            else (
                "Contains data whose source terms do not permit redistribution. Do not publish or share this folder."
                if lic["not_for_redistribution"]
                else "Per-species licences in species.csv."
            )
        )
    front |= {
        "pretty_name": f"Single-image tomography: {_subject(all_free)} x-rays (rebuild of Henzler et al., EG 2018)",
        "task_categories": ["image-to-3d"],
        "size_categories": [_size_category(n_samples_total)],
        "tags": [
            "x-ray",
            *([] if all_free else ["computed-tomography"]),
            "tomography",
            "skull",
            *([] if all_free else ["mammals"]),
            "3d-reconstruction",
            "single-image-tomography",
            "zarr",
            "croissant",
        ]
        + (["synthetic"] if all_free else [])
        + (["recipe-only"] if recipe_only else []),
        "source_datasets": ["original"] if all_free else ["extended"],
        "annotations_creators": ["machine-generated"],
        "viewer": False,
    }
    return yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000)


def _notices(*, lic: dict, classes: dict, prov: dict, recipe_only: bool) -> list[str]:
    """NOT FOR REDISTRIBUTION, the export's warnings, and (recipe-only) why there are no data."""
    L: list[str] = []
    if lic["not_for_redistribution"]:
        L += [
            "> **NOT FOR REDISTRIBUTION.** This folder contains data from sources whose terms do not permit "
            "redistribution (" + ", ".join(lic["blocked"]) + "). It was exported with an explicit "
            "`recipe_only=False` (`tomo export --with-data`) for people who already hold the rights. "
            "Do not publish or share it.",
            "",
        ]
    notes = (prov.get("export") or {}).get("warnings") or []
    if notes:
        L += ["## Warnings", ""] + [f"- {n}" for n in notes] + [""]
    if recipe_only and lic["restricted"]:
        L += [
            "> **Redistribution is not allowed** for the source scans of "
            + ", ".join(lic["restricted"])
            + " (terms: "
            + "; ".join(sorted({classes[n]["label"] for n in lic["restricted"]}))
            + "). This export therefore holds no data: "
            "it is a recipe to rebuild the dataset from the original sources, which you must obtain "
            "yourself under their terms.",
            "",
        ]
    return L


def _by_marker(markers: dict[str, dict], key: Callable[[dict], str | None]) -> dict[str, list[str]]:
    """{``key(marker)`` ("not recorded" where None: markers made before 2026-12-07): the species}."""
    out: dict[str, list[str]] = {}
    for name, m in sorted(markers.items()):
        out.setdefault(key(m) or "not recorded", []).append(name)
    return out


def _commit_of(marker: dict) -> str | None:
    """A marker's rendering commit: 12 hex, "+dirty" where the checkout had changes; None if absent."""
    code = marker.get("code") or {}
    commit = code.get("git_commit")
    return f"{commit[:12]}{'+dirty' if code.get('git_dirty') else ''}" if commit else None


def _species_code(markers: dict[str, dict]) -> dict[str, list[str]]:
    """{commit that rendered them (:func:`_commit_of`): the species}, from their completion markers."""
    return _by_marker(markers, _commit_of)


def _species_renderer(markers: dict[str, dict]) -> dict[str, list[str]]:
    """{backend that rendered them (``complete.renderer``): the species}, from their completion markers."""
    return _by_marker(markers, lambda m: m.get("renderer"))


def _rebuild_backend(prov: dict) -> str:
    """The backend a rebuild should render with: the one every species that recorded one agrees on
    (species from before 2026-12-07 record none), else cpu."""
    used = set((prov.get("store") or {}).get("species_renderer") or {}) - {"not recorded"}
    return used.pop() if len(used) == 1 else "cpu"


def _built_with(prov: dict) -> str:
    """The code that built the store (its creation and each species' render) and the exporter's, in words."""
    store_code = ((prov.get("store") or {}).get("provenance") or {}).get("code") or {}
    commit = store_code.get("git_commit")
    dirty = " (with uncommitted changes)" if store_code.get("git_dirty") else ""
    made = (
        f"the store created or last updated (store-create) at commit {commit[:12]}{dirty}"
        if commit
        else "the store records no commit of the code that built it (stores made before 2026-12-07, or code "
        "installed without git)"
    )
    species = (prov.get("store") or {}).get("species_code") or {}
    renders = [f"{k} ({len(v)})" for k, v in species.items() if k != "not recorded"]
    if "not recorded" in species:
        renders.append(f"no commit recorded ({len(species['not recorded'])})")
    rendered = "; the species' renders: " + ", ".join(renders) if renders else ""
    backends = (prov.get("store") or {}).get("species_renderer") or {}
    on = [f"{k} ({len(v)})" for k, v in backends.items() if k != "not recorded"]
    rendered += ", on the " + ", ".join(on) + " backend" if on else ""
    exp = prov.get("code_version") or {}
    exp_dirty = "+dirty" if exp.get("git_dirty") else ""
    exported = f"; exported at commit {exp['git_commit'][:12]}{exp_dirty}" if exp.get("git_commit") else ""
    return f"{made}{rendered}{exported}"


def _overview(attrs: dict, *, prov: dict, recipe_only: bool, n_samples_total: int) -> list[str]:
    """The paragraph on the dataset and its key figures (mode, species, samples, images, volumes, views)."""
    table = attrs["species"]
    splits = attrs.get("splits") or {}
    mode = "recipe-only" if recipe_only else "data"
    return [
        f"A dataset in the style of Henzler et al., *Single-image Tomography: 3D Volumes from 2D Cranial X-Rays* "
        f"(Computer Graphics Forum 37(2), Eurographics 2018), built with the `tomodata` code "
        f"(version {prov['code_version']['tomodata']}; {_built_with(prov)})"
        + (f", published at {prov['export']['code_url']}" if prov["export"].get("code_url") else "")
        + ".",
        "",
        *([f"* this dataset: {prov['export']['dataset_url']}"] if prov["export"].get("dataset_url") else []),
        *(
            ["* made by: " + ", ".join(c["name"] for c in prov["export"]["creators"])]
            if prov["export"].get("creators")
            else []
        ),
        *([f"* dataset version: {prov['export']['dataset_version']}"] if prov["export"].get("dataset_version") else []),
        f"* export mode: **{mode}**",
        f"* species: {len(table)} ({', '.join(f'{s}: {len(splits.get(s, []))}' for s in SPLIT_NAMES)}); "
        "splits hold out whole species",
        f"* samples: {attrs['samples_per_species']} per species ({attrs['n_views']} views, each also mirrored), "
        f"{n_samples_total} in all",
        f"* images: {attrs['image_size']}×{attrs['image_size']}, {attrs['encoding']['images']['dtype']} "
        f"({attrs['encoding']['images']['decode']}); orthographic Beer–Lambert x-rays, χ = {attrs['chi']}, "
        f"{attrs['steps']} samples per ray",
        f"* volumes: {attrs['volume_size']}³ float32 linear density in [0, 1], one per species",
        f"* views: `{attrs['view_scheme']['name']}` seed {attrs['view_scheme']['seed']} "
        f"(`{attrs['view_scheme'].get('function', 'tomodata.views.hemisphere_views')}`)"
        + ("; each species from its own views" if _per_species(attrs) else "; every species from the same views"),
        "",
    ]


def _licence_section(table: list[dict], *, lic: dict, classes: dict, recipe_only: bool, all_free: bool) -> list[str]:
    """## Licence and terms: what the export's licence covers, one table row per species, the conditions."""
    L = ["## Licence and terms", ""]
    if recipe_only and lic["blocked"]:
        L += [
            "The recipe files in this folder (tables, checksums, configuration) are released under CC0-1.0. "
            "They contain no data from the sources. The data you rebuild from them stay under each source's "
            "terms, listed below; where a source does not permit redistribution, neither does the rebuilt "
            "dataset.",
            "",
        ]
    elif recipe_only:
        L += ["The recipe files are released under CC0-1.0; the data they rebuild are under the licences below.", ""]
    elif all_free:
        L += [
            "All species are procedural (generated by `tomodata.phantoms`, no scanned specimen): the data are "
            "released under **CC0-1.0** (public domain dedication). The code that made them is BSD-3-Clause.",
            "",
        ]
    elif not lic["blocked"]:
        L += ["The data of each species are under the licence of its source, listed below.", ""]
    credits = any(c.get("attribution") or ATTRIBUTION in (c.get("conditions") or []) for c in classes.values())
    L += [
        "| species | split | licence | " + ("credit | " if credits else "") + "class | redistribution |",
        "|---|---|---|" + ("---|" if credits else "") + "---|---|",
    ]
    for e in table:
        c = classes[e["name"]]
        allowed = "allowed" if c["redistribution"] else "NOT allowed" if c["class"] == RESTRICTED else "not cleared"
        if c["redistribution"] and NO_DERIVATIVES in (c.get("conditions") or []):
            allowed = "not of these data (no derivatives: the cubes and x-rays are adaptations)"
        credit = (_cell(c.get("attribution") or "(none given)") + " | ") if credits else ""
        L.append(f"| {e['name']} | {e['split']} | {c['label']} | {credit}{c['class']} | {allowed} |")
    return L + [""] + _conditions_text(table, classes)


def _contents(files: list[str], *, recipe_only: bool, has_manifest: bool) -> list[str]:
    """## Contents: one table row per file (or kind of file) of the export."""
    L = [
        "## Contents",
        "",
        "| path | what |",
        "|---|---|",
        "| `README.md` | this card |",
        "| `croissant.json` | Croissant 1.1 metadata (record sets backed by the CSV tables) |",
        "| `SHA256SUMS` | sha256 of every other file (`sha256sum -c SHA256SUMS`) |",
        "| `provenance.json` | code version, configuration, the store's provenance, export time |",
        "| `species.csv` | one row per species, with the sha256 of each of its arrays |",
        "| `samples.csv` | one row per sample: species, split, sample, view, mirrored, image array"
        + (
            f" (the tables' `{STORE_NAME}/…` paths are those of a data export: read them in the store that "
            "the section Rebuild makes)"
            if recipe_only
            else ""
        )
        + " |",
        "| `splits/*.txt` | species per split |",
        "| `recipe/checksums.json` | per-species array sha256 (completion markers) and source checksums |",
        "| `recipe/store_attrs.json` | the store's root attributes (all rendering settings, species table) |",
    ]
    if has_manifest:
        L.append("| `recipe/manifest.tsv` | the specimen manifest (`docs/manifest.md`) |")
    cfg = [f for f in files if f.startswith("recipe/config")]
    if cfg:
        L.append(f"| `{cfg[0]}` | the build configuration |")
    recipe_rows = {
        "recipe/specimens.tsv": "every species with every setting its cube was made with",
        "recipe/rebuild.sh": "the commands that rebuild the store (section Rebuild)",
        "recipe/workflow_config.json": "the merged workflow config the store recorded",
    }
    L += [f"| `{f}` | {what} |" for f, what in recipe_rows.items() if f in files]
    if any(f.startswith("recipe/alignment/") for f in files):
        L.append("| `recipe/alignment/*.json` | each aligned specimen's transform (replayed by rebuild.sh) |")
    if not recipe_only:
        L.append(f"| `{STORE_NAME}/` | the Zarr v3 store (layout below) |")
    vols = sorted(f for f in files if f.startswith("volumes/"))
    if vols:
        kind, suffix = ("NIfTI-1", ".nii.gz") if vols[0].endswith(".nii.gz") else ("NRRD", ".nrrd")
        L.append(
            f"| `volumes/<name>{suffix}` | each species' canonical volume ({kind}: the store's "
            "`volume/0` in RAS+ space, cube z left, y inferior, x anterior; mm where `species.csv` gives the "
            "cube's `voxel_mm`, unitless otherwise) |"
        )
    return L


def _layout(attrs: dict, *, recipe_only: bool) -> list[str]:
    """## Layout: the store's arrays (shapes, dtypes) and a few lines of Python that read a sample."""
    first = attrs["species"][0]["name"]
    view = min(2, int(attrs["n_views"]) - 1)  # an example view every store has
    return [
        "",
        "## Layout" + (" (of the store you rebuild)" if recipe_only else ""),
        "",
        "```",
        f"{STORE_NAME}/zarr.json                  root attributes: everything needed to use the data",
        f"{STORE_NAME}/species/zarr.json          the group of the species (lists them)",
        f"{STORE_NAME}/species/<name>/zarr.json   status + completion marker (sha256 of every array)",
        f"{STORE_NAME}/species/<name>/volume/    OME-Zarr 0.5 image (multiscales: z, y, x; mm, or voxels where "
        "no scale was recorded)",
        f"{STORE_NAME}/species/<name>/volume/0   ({', '.join([str(attrs['volume_size'])] * 3)}) float32  "
        "density, vol[z, y, x]" + ("; volume/1 its 2x2x2 mean" if volume_levels(attrs) == 2 else ""),
        f"{STORE_NAME}/species/<name>/rotations  ({attrs['n_views']}, 3, 3) float64    R, camera -> volume",
        f"{STORE_NAME}/species/<name>/mirrored   ({attrs['samples_per_species']},) bool     sample 2i+1 is mirrored",
        f"{STORE_NAME}/species/<name>/views      ({attrs['samples_per_species']},) int32    view of each sample",
        f"{STORE_NAME}/species/<name>/images     ({attrs['samples_per_species']}, {attrs['image_size']}, "
        f"{attrs['image_size']}) {attrs['encoding']['images']['dtype']}",
        "```",
        "",
        "```python",
        "import zarr",
        f'g = zarr.open_group("{STORE_NAME}", mode="r", use_consolidated=False)',
        f'img = g["species/{first}/images"][{2 * view + 1}] / 65535.0   # sample {2 * view + 1} = view {view}, '
        "mirrored",
        f'R = g["species/{first}/rotations"][{view}]            # camera -> volume',
        "```",
        "",
    ]


def _per_species(attrs: dict) -> bool:
    """Whether the store's species each have their own views (``view_scheme.sets``, absent: shared)."""
    return view_sets_of(attrs["view_scheme"]) == "per_species"


def _geometry(attrs: dict) -> list[str]:
    """## Geometry: the store's root ``geometry`` and image encoding, quoted, and how the views were drawn:
    enough to re-render any stored x-ray without this code."""
    geo = attrs.get("geometry") or {}
    scheme = attrs["view_scheme"]
    L = [
        "## Geometry",
        "",
        "How every image was made, as the store's root attributes (`geometry`, `encoding`) record it:",
        "",
    ]
    L += [f"* **{key}**: {text}" for key, text in geo.items()]
    L += [
        f"* **image values**: {attrs['encoding']['images']['encode']}; {attrs['encoding']['images']['decode']}",
        f"* **settings**: χ = {attrs['chi']}, steps = {attrs['steps']}, S = {attrs['image_size']} pixels, "
        f"volume {attrs['volume_size']}³",
    ]
    if scheme.get("name") == VIEW_SCHEME:
        L.append(
            f"* **views** (`{VIEW_SCHEME}`, seed {scheme['seed']}, n = {attrs['n_views']}; stored in `rotations`, so "
            f"this is only needed to make the same views elsewhere): {VIEW_SCHEME_RECIPE}"
            + (f"; each species with its own seed: {SPECIES_SEED_RECIPE}" if _per_species(attrs) else "")
        )
    agree = (
        "to within 1 uint16 step"
        if attrs["encoding"]["images"]["dtype"] == "uint16"
        else "to within float16 rounding (about 5e-4 relative)"
    )
    return L + [
        "",
        "Zero padding means: between the outermost voxel centres and a face mu falls linearly towards 0, "
        "reaching half the border voxel's value at the face; outside the cube mu = 0. A renderer written "
        f"from these rules alone (float64 numpy, trilinear) gives every stored image {agree}: the store's "
        "renderer sums in float32. The dataset's code checks this with such a renderer (`tests/test_export.py`).",
        "",
    ]


def _verify(*, recipe_only: bool) -> list[str]:
    """## Verify: the commands that check the folder (and, for data, the store)."""
    L = [
        "## Verify",
        "",
        "```bash",
        "sha256sum -c SHA256SUMS                 # every file",
        "python -c 'from tomodata.export import verify_export; print(verify_export(\".\"))'",
    ]
    if not recipe_only:
        L.append(f"tomo validate {STORE_NAME}               # every array against its completion marker")
    return L + ["```", ""]


def _rebuild(attrs: dict, code_url: str | None = None, backend: str = "cpu") -> list[str]:
    """## Rebuild: ``tomo build-demo`` with the recorded arguments, or ``recipe/rebuild.sh``; then the check.
    The rebuild goes beside the export folder, named after it (``rebuild.sh``'s default), spelled with the
    shell's ``$(basename "$PWD")`` so that the card's bytes do not depend on the folder's name."""
    L = ["## Rebuild", ""]
    cmd = (attrs.get("provenance", {}).get("config") or {}).get("command")
    where = f" ({code_url})" if code_url else ""
    L += [
        f"Install the `tomodata` code{where} at the commit that built the store (`provenance.json`: "
        "`store.provenance.code`, and `store.species_code` for each species' render; `code_version` is the "
        "exporter's, the same code only where the commits agree), then:",
        "",
    ]
    # beside the export, not in it: the export stays as published (verify_export lists any file added)
    # and named after it, as rebuild.sh's default: two exports in one folder do not share a rebuild
    rebuilt = '../$(basename "$PWD")-rebuilt' + ("" if cmd == "tomo build-demo" else ".zarr")
    if cmd == "tomo build-demo":
        args = dict(attrs["provenance"]["config"].get("args", {}))
        if "held_out" in args:  # stores of before --held-out became --val
            args.setdefault("val", args.pop("held_out"))
        opts = " ".join(
            f"--{k.replace('_', '-')} {args[k]}"
            for k in ("species", "val", "test", "views", "size", "steps", "volume_size", "chi", "seed", "view_sets")
            if k in args
        )
        L += ["```bash", f'tomo build-demo -o "{rebuilt}" {opts} --backend {backend}', "```", ""]
    else:
        L += [
            "`recipe/specimens.tsv` lists every species with every setting its cube was made with (spacing, "
            "slice axis, orientation, window, background, crop, source checksum); `recipe/rebuild.sh` fetches "
            "the sources (checking their sha256), makes each cube with those settings, cube size and content "
            "key, and the store with the recorded settings and workflow config. Local sources (rows whose "
            "`notes` say `local:`) must be supplied at the path given, or the row edited; the script names every "
            "missing one before it starts. `BACKEND=cuda` renders on the GPU (default: cpu)"
            + (
                ": the species were rendered on cuda, so give `BACKEND=cuda` for their images' bits."
                if backend == "cuda"
                else "."
            ),
            "",
            "```bash",
            f"bash recipe/rebuild.sh      # writes {rebuilt}: tomo fetch, tomo cube per species, store-create, "
            "render, finalize",
            "```",
            "",
        ]
    return L + [
        "Then compare with the recorded checksums: "
        f"`python -c \"from tomodata.export import verify_rebuild; print(verify_rebuild('{rebuilt}', '.'))\"` "
        "(in the export folder). "
        "Volumes, rotations, mirror flags and view indices must match bit for bit. Images match bit for bit "
        "when rendered with the same backend; the CUDA and CPU renderers agree within 1 uint16 step (float32 "
        "rounding), so a build on the other backend can differ in `images_sha256` only: "
        '`verify_rebuild(..., images="skip")` checks the rest. The CPU renderer (since 2026-12-07, when '
        "its ray sum became fixed point) and resampling gave the same bits when numba generated their code "
        "for the x86-64 targets Haswell, Zen 2 and 3 and Skylake-AVX512 (AVX2 and AVX-512 code, run on one "
        "AVX-512 machine; not on real machines of each kind); "
        "on a CPU without FMA the cubes and images differ in float32 rounding; other architectures (ARM) "
        "and other numba, numpy, scipy or SimpleITK versions were not checked.",
        "",
    ]


def _citation_and_provenance(attrs: dict, prov: dict) -> list[str]:
    """## Citation (BibTeX of the paper) and ## Provenance (export time, store generator)."""
    return ["## Citation", "", "```bibtex", CITATION_BIBTEX, "```", ""] + [
        "## Provenance",
        "",
        f"Exported {prov['exported_at']} by `tomodata.export.export_dataset` ({EXPORT_SPEC}); store built by "
        f"`{attrs.get('provenance', {}).get('generator', 'tomodata')}` "
        f"(code {attrs.get('provenance', {}).get('code_version')})."
        " See `provenance.json`.",
        "",
    ]


def _card(
    attrs: dict,
    *,
    recipe_only: bool,
    lic: dict,
    classes: dict,
    files: list[str],
    prov: dict,
    n_samples_total: int,
    has_manifest: bool,
) -> str:
    """The dataset card's text. ``lic``: :func:`tomodata.export.licence._licence_summary`'s; ``classes``:
    {species: :func:`classify_licence`}; ``files``: the export's paths written so far, sorted; ``prov``:
    provenance.json's content."""
    table = attrs["species"]
    all_free = all(c["class"] == FREE for c in classes.values())
    fm = _front_matter(lic=lic, recipe_only=recipe_only, all_free=all_free, n_samples_total=n_samples_total)
    L = ["---", fm.rstrip("\n"), "---", "", f"# Single-image tomography: {_subject(all_free)} x-rays", ""]
    L += _notices(lic=lic, classes=classes, prov=prov, recipe_only=recipe_only)
    L += _overview(attrs, prov=prov, recipe_only=recipe_only, n_samples_total=n_samples_total)
    L += _licence_section(table, lic=lic, classes=classes, recipe_only=recipe_only, all_free=all_free)
    L += _contents(files, recipe_only=recipe_only, has_manifest=has_manifest)
    L += _layout(attrs, recipe_only=recipe_only)
    L += _geometry(attrs)
    L += _verify(recipe_only=recipe_only)
    L += _rebuild(attrs, prov["export"].get("code_url"), _rebuild_backend(prov))
    L += _citation_and_provenance(attrs, prov)
    return "\n".join(L)
