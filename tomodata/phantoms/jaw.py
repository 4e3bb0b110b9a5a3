"""The jaws' parts of the anatomical model: tooth rows, jaw joint, mandible (body, ramus, condyle,
coronoid process, symphysis) and teeth (cheek teeth with roots, incisors, canines).

Each part adds its ops to a :class:`.fields._Model` (and landmarks); :func:`.skull._skull_model`
calls them in a fixed order, which is part of the output (seeded draws, float32 unions).
Anatomical frame as in :mod:`.cranium`: x anterior, u dorsal, z lateral ("left" is +z, s = +1);
lengths in units of the skull length L.
"""

from __future__ import annotations

import math

import numpy as np

from .cranium import Arch, _Head, _Snout
from .fields import _Model
from .params import SpeciesParams
from .sdf import _bezier, _bezier_tube, _ellipsoid, _plate, _poly_plate, _round_cone


class _Rows:
    """The tooth rows: the upper row along the snout's floor from ``x_front`` back to ``x_back``;
    crowns of radius about ``ts`` and height ``crown``."""

    def __init__(self, p: SpeciesParams, hd: _Head, sn: _Snout):
        self.sn = sn
        self.ts = p.tooth_size
        self.crown = 1.1 * self.ts
        self.x_front = sn.b[0] + 0.25 * sn.rb
        self.x_back = hd.x_o - 0.35 * hd.r_o
        self.row_len = self.x_front - self.x_back

    def z_row(self, x) -> float:
        """Half distance between the left and right tooth rows at x."""
        return float(np.maximum(0.72 * self.sn.rost(x)[0], 0.6 * self.ts))

    def u_row(self, x) -> float:
        """Height of the upper row's gum line at x."""
        return float(self.sn.rost(x)[2])

    def u_occ(self, x) -> float:
        """Height of the occlusal plane at x."""
        return self.u_row(x) - self.crown

    def u_alv(self, x) -> float:
        """Height of the top of the mandible body at x."""
        return self.u_occ(max(x, self.x_back)) - self.crown


class _Jaw:
    """The mandible's frame: condyles ``cond_lm[s]`` under the jaw joints (sets their landmarks),
    chin ``x_chin``, the body's turn into the ramus at ``x_r``, depth ``jd``, condyle radius
    ``rcond`` and plate half thickness ``rz``."""

    def __init__(self, m: _Model, p: SpeciesParams, rows: _Rows, arches: dict[int, Arch]):
        zt = p.zygomatic_thickness
        gap = 0.016
        self.rows = rows
        self.jd = jd = p.jaw_depth
        self.rcond = rcond = max(0.2 * jd, 0.018)
        self.cond_lm: dict[int, np.ndarray] = {}
        for s in (-1, 1):
            g = _bezier(*arches[s], 0.9)
            cond = np.array([g[0], g[1] - 1.7 * zt - gap - rcond, g[2] * 0.93])
            self.cond_lm[s] = cond
            m.landmarks["condyle_left" if s > 0 else "condyle_right"] = cond
        tip = rows.x_front - 0.35 * jd
        self.x_chin = x_chin = self.cond_lm[1][0] + (tip - self.cond_lm[1][0]) * p.jaw_length
        self.x_r = min(rows.x_back - 0.4 * jd, x_chin - 0.05)  # where the body turns into the ramus
        self.rz = 0.1 * jd + 0.005

    def z_mand(self, x, s):
        """z of the mandible's mid plane at x on side s."""
        cond_lm, x_r, x_back = self.cond_lm, self.x_r, self.rows.x_back
        zc = abs(cond_lm[s][2])
        w = float(np.clip((x - x_r) / max(x_back - x_r, 1e-3), 0.0, 1.0))
        zr = self.rows.z_row(max(x, x_back))
        if x < x_r:
            w2 = float(np.clip((x_r - x) / max(x_r - cond_lm[s][0], 1e-3), 0.0, 1.0))
            return s * (zr + (zc - zr) * w2)
        return s * zr * (0.85 + 0.15 * w)


def _mandible_half(m: _Model, p: SpeciesParams, hd: _Head, rows: _Rows, jaw: _Jaw, arch: Arch, s: int) -> None:
    """Side s's mandible: the body (plates chin → ramus), the ramus up to the condyle, the condyle,
    and the coronoid process (``arch``: that side's zygomatic arch)."""
    crown, u_alv = rows.crown, rows.u_alv
    jd, rcond, x_chin, x_r, rz, z_mand = jaw.jd, jaw.rcond, jaw.x_chin, jaw.x_r, jaw.rz, jaw.z_mand
    cond = jaw.cond_lm[s]
    xs = np.linspace(x_chin, x_r, 6)
    pts, rads = [], []
    for j, x in enumerate(xs):
        t = j / (len(xs) - 1)
        dep = jd * (0.8 + 0.2 * t)
        pts.append(np.array([x, u_alv(x) - 0.5 * dep + 0.2 * crown, z_mand(x, s)]))
        rads.append(0.5 * dep)
    for i in range(len(pts) - 1):
        m.add("mandible", _plate(pts[i], pts[i + 1], rads[i], rads[i + 1], rz), k=0.02)
    base = pts[-1]
    top = base + np.array([0.2 * jd, rads[-1] * 0.9, 0.0])
    bot = base + np.array([0.0, -rads[-1] * 0.9, 0.0])
    ang = np.array([cond[0] - 0.25 * jd, bot[1] - 0.1 * jd, 0.0])
    ang[2] = base[2] + (cond[2] - base[2]) * 0.9
    c_back = cond + np.array([-0.8 * rcond, -0.5 * rcond, 0.0])
    c_front = cond + np.array([0.9 * rcond, -1.2 * rcond, 0.0])
    m.add("mandible", _poly_plate([top, bot, ang, c_back, c_front], 0.75 * rz, 0.25 * jd), k=0.03)
    m.add("mandible", _ellipsoid(cond, (rcond, rcond, rcond * 1.8)), k=0.01)
    if p.coronoid_size > 0.05:
        _coronoid(m, p, hd, rows, jaw, arch, s, top, c_front)


def _coronoid(m: _Model, p: SpeciesParams, hd: _Head, rows: _Rows, jaw: _Jaw, arch: Arch, s: int, top, c_front) -> None:
    """The coronoid process: a plate from the ramus (``top``, ``c_front``) up into the temporal
    fossa, medial to the zygomatic arch ``arch`` (and lateral to the braincase where there is room)."""
    r_o, bc, br, x_back, jd, rz = hd.r_o, hd.bc, hd.br, rows.x_back, jaw.jd, jaw.rz
    cond = jaw.cond_lm[s]
    xt = cond[0] + 0.25 * (x_back - cond[0])
    ut = float(_bezier(*arch, 0.7)[1]) + p.coronoid_size * r_o * 0.7
    xn, un = (xt - bc[0]) / br[0], (ut - bc[1]) / br[1]
    z_brain = br[2] * math.sqrt(max(0.0, 1 - xn * xn - un * un))
    tt = np.linspace(0, 1, 201)
    arc_pts = _bezier(*arch, tt[:, None])
    z_arch = abs(arc_pts[np.argmin(np.abs(arc_pts[:, 0] - xt)), 2])
    zt_ = s * (0.4 * z_brain + 0.6 * z_arch) if z_arch > z_brain + 0.02 else cond[2]
    notch = c_front + 0.35 * (top - c_front)
    m.add(
        "mandible",
        _poly_plate(
            [
                top,
                notch,
                np.array([xt + 0.1 * jd, ut, zt_]),
                np.array([xt - 0.15 * jd, ut - 0.05 * jd, zt_]),
            ],
            0.7 * rz,
            0.1 * jd,
        ),
        k=0.03,
    )


def _symphysis(m: _Model, rows: _Rows, jaw: _Jaw) -> None:
    """The symphysis joins the two halves of the mandible at the chin."""
    jd, x_chin = jaw.jd, jaw.x_chin
    zc = abs(jaw.z_mand(x_chin, 1))
    uc = rows.u_alv(x_chin) - 0.4 * jd
    m.add(
        "mandible",
        _round_cone((x_chin - 0.3 * jd, uc, -zc), (x_chin - 0.3 * jd, uc, zc), 0.3 * jd, 0.3 * jd, (0.5, 1.0, 1.0)),
        k=0.03,
    )


def _cheek_teeth(m: _Model, p: SpeciesParams, rows: _Rows, jaw: _Jaw, s: int, jit) -> None:
    """Side s's upper and lower cheek teeth (crown + root), behind the diastema."""
    ts, crown, x_front, row_len = rows.ts, rows.crown, rows.x_front, rows.row_len
    z_row, u_row, u_occ, x_chin, z_mand = rows.z_row, rows.u_row, rows.u_occ, jaw.x_chin, jaw.z_mand
    n = p.teeth_count
    s0 = min(0.12 + p.diastema, 0.8)
    spacing = (1 - s0) * row_len / n
    for i in range(n):
        x = x_front - (s0 + (i + 0.5) * (1 - s0) / n) * row_len
        grow = 0.75 + 0.45 * (i / max(n - 1, 1))  # premolars small, molars large
        sz = min(ts * grow, 0.8 * spacing + 0.3 * ts) * jit()
        rxs = 0.5 * spacing * 0.97
        zr = s * z_row(x)
        m.add("teeth", _ellipsoid((x, u_row(x) - 0.3 * crown, zr), (rxs, 0.8 * crown, sz)))
        m.add(
            "teeth",
            _round_cone(
                (x, u_row(x) - 0.3 * crown, zr),
                (x, u_row(x) + 1.1 * crown, zr),
                0.6 * min(rxs, sz),
                0.3 * min(rxs, sz),
            ),
        )
        if x_chin - 0.01 >= x:
            zl = z_mand(x, s)
            uo = u_occ(x)
            m.add("teeth", _ellipsoid((x, uo - 0.7 * crown, zl), (rxs, 0.8 * crown, 0.95 * sz)))
            m.add(
                "teeth",
                _round_cone(
                    (x, uo - 0.7 * crown, zl), (x, uo - 2.1 * crown, zl), 0.6 * min(rxs, sz), 0.3 * min(rxs, sz)
                ),
            )


def _incisors(m: _Model, p: SpeciesParams, sn: _Snout, rows: _Rows, jaw: _Jaw, s: int) -> None:
    """Side s's incisors: one big curved (rodent / lagomorph) incisor per quadrant when
    ``incisor_size`` >= 0.025, else three small upper and lower ones."""
    rost, rb, h = sn.rost, sn.rb, sn.h
    x_front, u_row, u_occ, u_alv = rows.x_front, rows.u_row, rows.u_occ, rows.u_alv
    jd, x_chin = jaw.jd, jaw.x_chin
    inc = p.incisor_size
    if inc >= 0.025:  # one big curved (rodent / lagomorph) incisor per quadrant
        zi = s * 0.7 * inc
        r0p = (x_front - 0.15 - 2 * inc, rost(x_front - 0.15)[1], zi)
        tipp = (x_front - 0.5 * inc, u_occ(x_front) - 0.3 * inc, zi)
        ctrl = (x_front + 1.5 * inc, rost(x_front)[1] - 0.2 * rb * h, zi)
        m.add_all("teeth", _bezier_tube(r0p, ctrl, tipp, 0.55 * inc, 0.4 * inc, 5))
        lroot = (x_chin - 0.18, u_alv(x_chin) - 0.55 * jd, zi)
        ltip = (x_front - 1.3 * inc, u_occ(x_front) + 0.2 * inc, zi)
        lctrl = (x_chin + 0.5 * inc, u_alv(x_chin) - 0.6 * jd, zi)
        m.add_all("teeth", _bezier_tube(lroot, lctrl, ltip, 0.5 * inc, 0.38 * inc, 5))
    else:
        for j in range(3):
            x = x_front - 0.02 * j - 0.2 * inc
            zi = s * (j + 0.5) * 1.9 * inc
            m.add("teeth", _round_cone((x - 0.01, u_row(x) + 1.5 * inc, zi), (x, u_occ(x), zi), inc, 0.7 * inc))
            xl = x - 1.5 * inc
            if x_chin + 0.02 >= xl:
                m.add(
                    "teeth",
                    _round_cone(
                        (xl - 0.02, u_alv(xl) - 2 * inc, zi * 0.85),
                        (xl, u_occ(xl) + 0.2 * inc, zi * 0.85),
                        inc,
                        0.7 * inc,
                    ),
                )


def _canines(m: _Model, p: SpeciesParams, rows: _Rows, jaw: _Jaw, s: int) -> None:
    """Side s's upper and lower canines (none when ``canine_size`` <= 0.006)."""
    x_front, row_len, z_row, u_row = rows.x_front, rows.row_len, rows.z_row, rows.u_row
    u_occ, u_alv, x_chin, z_mand = rows.u_occ, rows.u_alv, jaw.x_chin, jaw.z_mand
    cs = p.canine_size
    if cs > 0.006:
        xc = x_front - 0.1 * row_len - 0.5 * cs
        zc_ = s * (z_row(xc) + 0.2 * cs)
        m.add(
            "teeth",
            _round_cone(
                (xc + 0.3 * cs, u_row(xc) + 1.6 * cs, zc_),
                (xc - 0.1 * cs, u_occ(xc) - 1.3 * cs, zc_),
                0.6 * cs,
                0.15 * cs,
            ),
        )
        xl = xc + 1.0 * cs
        if x_chin + 0.02 >= xl:
            zl = z_mand(xl, s) + s * 0.15 * cs
            m.add(
                "teeth",
                _round_cone(
                    (xl - 0.3 * cs, u_alv(xl) - 1.5 * cs, zl),
                    (xl + 0.1 * cs, u_occ(xl) + 1.1 * cs, zl),
                    0.55 * cs,
                    0.13 * cs,
                ),
            )
