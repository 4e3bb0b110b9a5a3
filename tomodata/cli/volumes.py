"""Volumes and x-rays: ``tomo phantom``, ``tomo render``, ``tomo build-demo``, ``tomo demo-movies``."""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..progress import progress


def cmd_phantom(a) -> int:
    """``tomo phantom``: a procedural skull volume (.npy/.npz), optionally 8 x-ray previews."""
    from ..phantoms import skull_volume, species_params, specimen_params
    from ..render_jobs import save_volume
    from ..views import hemisphere_views

    out = Path(a.out)
    if out.suffix.lower() not in (".npy", ".npz"):  # found before the work (save_volume says it too)
        raise ValueError(f"{out}: the output must be a .npy or .npz file")
    params = species_params(a.species, seed=a.seed)
    if a.specimen is not None:
        params = specimen_params(params, a.specimen)
    vol = skull_volume(params, size=a.size, seed=a.seed)
    save_volume(out, vol)
    print(f"wrote {out}: {vol.shape} float32, density {vol.min():.3f}…{vol.max():.3f}")
    if a.preview:
        from ..previews import write_previews
        from ..render import render_xrays

        imgs = render_xrays(vol, hemisphere_views(8, seed=0), size=256, steps=128, backend=a.backend)
        for p in write_previews(imgs, Path(a.preview), prefix=out.stem):
            print(f"preview {p}")
    return 0


def cmd_render(a) -> int:
    """``tomo render``: images.npy, rotations.npy, render.json and PNG previews of a volume's views."""
    from ..previews import remove_previews, write_previews
    from ..render_jobs import load_volume, render_batched, save_render
    from ..views import hemisphere_views

    out = Path(a.output)
    if out.exists() and not out.is_dir():  # found before the work, not after it
        raise ValueError(f"{out} is a file; tomo render writes a folder (-o DIR)")
    vol = load_volume(Path(a.volume))  # a missing or ambiguous file: ValueError, exit status 2
    rots = hemisphere_views(a.views, seed=a.seed)
    imgs = render_batched(vol, rots, size=a.size, steps=a.steps, chi=a.chi, backend=a.backend)
    meta = dict(
        volume=str(a.volume),
        views=a.views,
        seed=a.seed,
        size=a.size,
        steps=a.steps,
        chi=a.chi,
        encoding="float32 opacity = 1 - exp(-chi/steps * sum of densities)",
        code_version=__version__,
    )
    save_render(out, imgs, rots, meta)
    remove_previews(out)  # an earlier render's, which may have had more views or previews
    paths = write_previews(imgs, out, limit=a.previews) if a.previews else []
    print(f"wrote {out / 'images.npy'} ({imgs.shape}), rotations.npy, render.json and {len(paths)} PNGs")
    return 0


def cmd_build_demo(a) -> int:
    """``tomo build-demo``: a finalised store of procedural species (exit status 1 if it is not valid)."""
    from ..phantoms import skull_volume
    from ..previews import write_previews
    from ..render_jobs import render_species
    from ..run_layout import STORE_NAME
    from ..species_table import demo_species
    from ..store import create_store, finalize_store
    from ..store_settings import StoreSettings

    out = Path(a.output)
    store = out / STORE_NAME
    names, params, table = demo_species(a.species, val=a.val, test=a.test, seed=a.seed, volume_size=a.volume_size)
    settings = StoreSettings(
        chi=a.chi,
        steps=a.steps,
        image_size=a.size,
        volume_size=a.volume_size,
        n_views=a.views,
        view_seed=a.seed,
        view_sets=a.view_sets,
    )
    create_store(
        store,
        settings,
        species=table,
        provenance=dict(command="tomo build-demo", args=vars(a) | {"func": None}),
        overwrite=a.overwrite,
    )
    for i, name in enumerate(progress(names, desc="species", unit="species")):
        vol = skull_volume(params[i], size=a.volume_size, seed=a.seed)
        imgs, _ = render_species(store, name, vol, backend=a.backend)
        write_previews(imgs, out / "previews", prefix=name, limit=9)
    report = finalize_store(store)
    print(report.summary())
    print(f"store {store}, previews in {out / 'previews'}")
    return 0 if report.ok else 1


def cmd_demo_movies(a) -> int:
    """``tomo demo-movies``: procedural species as slice movies and their manifest.tsv."""
    from ..demo import write_demo_movies

    manifest = write_demo_movies(
        a.output, n_species=a.species, val=a.val, test=a.test, movie_size=a.movie_size, codec=a.codec, seed=a.seed
    )
    print(f"wrote {a.species} slice movies and {manifest}")
    return 0
