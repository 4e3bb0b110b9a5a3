"""Draw docs/img/pose.png: the canonical pose, on a demo skull and on two real human head CTs.

    python docs/pose_figure.py            (needs ../shared/data/real beside the clone)

Each tile is a cube made by tomodata.ingest.cube_specimen with the settings shown (the same as the
manifest columns), drawn by tomodata.align.contact_sheet: side (along z: dorsal up, snout right),
top (along y), front (along x).
"""

from pathlib import Path

import numpy as np

from tomodata.align import contact_sheet
from tomodata.ingest import cube_specimen
from tomodata.phantoms import skull_volume, species_params

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
SIZE = 96


def main() -> None:
    tiles = {"demo skull (procedural_00)": skull_volume(species_params(0, seed=0), size=SIZE, seed=0)}
    head = REAL / "cthead-8bit"
    cranium = REAL / "invesalius-cranium" / "cranium.nhdr"
    tiles["cthead as read (z,y,x)"] = cube_specimen(head, spacing=(2, 1, 1), size=SIZE)[0]
    tiles["cthead x,z,-y, largest"] = cube_specimen(
        head, spacing=(2, 1, 1), size=SIZE, orientation="x,z,-y", crop="largest"
    )[0]
    tiles["cranium x,-z,y, hu-bone"] = cube_specimen(
        cranium, size=SIZE, window="hu-bone", orientation="x,-z,y", crop="largest"
    )[0]
    out = ROOT / "docs" / "img" / "pose.png"
    contact_sheet({k: np.asarray(v, np.float32) for k, v in tiles.items()}, out, cols=2, panel_px=128)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
