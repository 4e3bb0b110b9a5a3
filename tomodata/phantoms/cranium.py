"""The cranium's parts of the anatomical model: braincase, crests, foramen magnum, snout, nasal
cavity and sinus, ears, orbits and zygomatic arches.

Each part adds its ops to a :class:`.fields._Model` (and landmarks); :func:`.skull._skull_model`
calls them in a fixed order, which is part of the output (seeded draws, float32 unions).
Anatomical frame: x anterior (snout tip at about +0.5, occiput at -0.5), u dorsal, z lateral
("left" is +z, s = +1; right is s = -1); lengths in units of the skull length L.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from .fields import Sdf, _Model
from .params import SpeciesParams
from .sdf import _arc, _bezier_tube, _ellipsoid, _plate, _round_cone

Arch = tuple[np.ndarray, np.ndarray, np.ndarray]  # a zygomatic arch's Bezier control points (p0, p1, p2)


@dataclasses.dataclass(frozen=True)
class _Head:
    """The skull's basic measures (anatomical frame, units L)."""

    f: float  # orbit frontality
    r_o: float  # orbit radius
    x_o: float  # x of the orbit centre
    bw: float  # braincase breadth
    bh: float  # braincase height
    bl: float  # braincase length
    bc: np.ndarray  # braincase centre (x, u, z)
    br: np.ndarray  # braincase semi-axes (x, u, z)
    u_o: float  # u of the orbit centre
    t0: float  # mean cranial wall thickness


def _head(p: SpeciesParams) -> _Head:
    f = p.orbit_frontality
    r_o = p.orbit_radius
    x_o = 0.5 - p.rostrum_length
    bw = p.braincase_width
    bh = bw * p.braincase_aspect
    bl = p.braincase_length * (x_o + 0.5)
    # forward-facing orbits (primates) sit below the front of a raised braincase
    bc = np.array([-0.5 + bl / 2, 0.3 * f * bh / 2, 0.0])
    br = np.array([bl / 2, bh / 2, bw / 2])
    u_o = p.orbit_height * br[1]
    t0 = p.shell_thickness
    return _Head(f=f, r_o=r_o, x_o=x_o, bw=bw, bh=bh, bl=bl, bc=bc, br=br, u_o=u_o, t0=t0)


def _braincase(m: _Model, p: SpeciesParams, hd: _Head, rng) -> tuple[Sdf, Sdf]:
    """Braincase: outer ellipsoid, hollow inside with a wall of varying thickness.
    Returns the wall thickness function and the braincase outline's SDF."""
    bc, br, t0 = hd.bc, hd.br, hd.t0
    # (``outer`` is the solid outline; _combine turns it into a bony shell of thickness ``wall``)
    m.add("outer", _ellipsoid(bc, br))
    tv = p.shell_thickness_variation
    ph = rng.uniform(0, 2 * np.pi, 2)

    def wall(X, U, Z):
        """Bone wall thickness: thicker at the vault's top, base and back, thin at the temples."""
        xn = np.clip((X - bc[0]) / br[0], -1.2, 1.2)
        un = np.clip((U - bc[1]) / br[1], -1.2, 1.2)
        zn = np.clip(Z / br[2], -1.2, 1.2)
        g = un * un - zn * zn - 0.5 * xn + 0.3 * np.sin(7 * xn + ph[0]) * np.cos(5 * un + ph[1])
        return t0 * (1.0 + tv * np.clip(g, -1.0, 1.0))

    return wall, _ellipsoid(bc, br)[0]


def _crests(m: _Model, p: SpeciesParams, hd: _Head) -> None:
    """Sagittal crest and nuchal (occipital) crest."""
    bc, br, t0 = hd.bc, hd.br, hd.t0
    if p.sagittal_crest > 0.002:
        cu = br[1] * 0.75
        m.add(
            "outer",
            _plate(
                (bc[0] - 0.6 * br[0], cu, 0.0),
                (bc[0] + 0.2 * br[0], cu, 0.0),
                0.2 * br[1] + p.sagittal_crest,
                0.12 * br[1],
                0.35 * t0 + 0.004,
            ),
            k=0.015,
        )
    m.add(
        "outer",
        _arc(
            (bc[0] - 0.8 * br[0], bc[1] + 0.05 * br[1], 0.0),
            (0, 1, 0),
            (0, 0, 1),
            0.62 * br[1],
            0.35 * t0 + 0.4 * p.sagittal_crest,
            -1.2,
            1.2,
        ),
        k=0.02,
    )


def _foramen(m: _Model, hd: _Head) -> None:
    """Foramen magnum and occipital condyles."""
    bc, br, bw = hd.bc, hd.br, hd.bw
    fm_r = 0.09 * bw
    pf = np.array([bc[0] - 0.93 * br[0], bc[1] - 0.45 * br[1], 0.0])
    m.add(
        "cavity",
        _round_cone((bc[0] - 0.5 * br[0], bc[1] - 0.2 * br[1], 0.0), pf + np.array([-0.08, -0.04, 0.0]), fm_r, fm_r),
    )
    for s in (-1, 1):
        m.add(
            "outer",
            _ellipsoid(pf + np.array([-0.01, -0.5 * fm_r, s * 1.25 * fm_r]), (0.7 * fm_r, 0.9 * fm_r, 0.55 * fm_r)),
            k=0.015,
        )


@dataclasses.dataclass(frozen=True)
class _Snout:
    """The snout (rostrum) capsule from ``a`` (radius ra) to ``b`` (radius rb), height / breadth h,
    and the forehead bridge (interorbital half width iow, from f0 radius rf0 to radius rf1)."""

    a: np.ndarray
    b: np.ndarray
    ra: float
    rb: float
    h: float
    iow: float
    f0: np.ndarray
    rf0: float
    rf1: float

    def rost(self, x):
        """Half width, centre height and bottom height of the snout at x (clamped)."""
        a, b, ra, rb, h = self.a, self.b, self.ra, self.rb, self.h
        t = np.clip((x - a[0]) / (b[0] - a[0]), 0.0, 1.0)
        r = ra + (rb - ra) * t
        uc = a[1] + (b[1] - a[1]) * t
        return r, uc, uc - 0.9 * r * h


def _snout(m: _Model, p: SpeciesParams, hd: _Head) -> _Snout:
    """Snout (a tapered capsule, taller than wide by rostrum_height), forehead bridge and palate."""
    f, r_o, x_o, bw, bc, br, u_o = hd.f, hd.r_o, hd.x_o, hd.bw, hd.bc, hd.br, hd.u_o
    ra = p.rostrum_width / 2
    rb = ra * p.rostrum_taper
    h = p.rostrum_height
    ua = u_o - r_o * (0.3 + 0.9 * f)
    a = np.array([x_o, ua, 0.0])
    bx = max(0.5 - rb, x_o + 0.03 + abs(ra - rb))
    b = np.array([bx, ua + math.tan(math.radians(p.rostrum_tilt)) * (bx - x_o), 0.0])
    m.add("outer", _round_cone(a, b, ra, rb, (1.0, h, 1.0)), k=0.03)
    m.landmarks["snout_tip"] = b + np.array([rb, 0.0, 0.0])

    # Forehead (frontal) bridge between braincase and snout, with a sinus inside (_nasal).
    iow = max(0.45 * ra, 0.25 * r_o)
    f0 = np.array([bc[0] + 0.3 * br[0], bc[1] + 0.1 * br[1], 0.0])
    f1 = np.array([x_o + 0.3 * r_o, u_o + 0.1 * r_o, 0.0])
    rf0 = 0.7 * min(br[1], br[2])
    rf1 = iow + 0.35 * r_o
    m.add("outer", _round_cone(f0, f1, rf0, rf1), k=0.04)
    sn = _Snout(a=a, b=b, ra=ra, rb=rb, h=h, iow=iow, f0=f0, rf0=rf0, rf1=rf1)
    # Palate / skull base: ties the snout to the braincase floor.
    _, _, ubot_a = sn.rost(a[0])
    m.add(
        "outer",
        _round_cone(
            (a[0], ubot_a + 0.4 * ra * h, 0.0),
            (bc[0] - 0.1 * br[0], bc[1] - 0.55 * br[1], 0.0),
            0.8 * ra,
            0.3 * bw,
            (1.0, 0.45, 1.0),
        ),
        k=0.04,
    )
    return sn


def _nasal(m: _Model, p: SpeciesParams, hd: _Head, sn: _Snout, shell_sdf: Sdf) -> tuple[Sdf, tuple]:
    """Nasal cavity (open at the front) continuing back as the ethmoid / frontal sinus.
    Returns the SDF of the spaces the orbits keep a wall from, and the turbinates' axis."""
    r_o, br, t0 = hd.r_o, hd.br, hd.t0
    a, b, ra, rb, h, f0, rf0, rf1 = sn.a, sn.b, sn.ra, sn.rb, sn.h, sn.f0, sn.rf0, sn.rf1
    nc = p.nasal_cavity
    up = (1 - nc) * ra * h * 0.3
    na = a + np.array([0.02 + 0.3 * r_o, up, 0.0])
    nb = b + (b - a) * (0.3 / (b[0] - a[0])) + np.array([0.0, up, 0.0])
    rna, rnb = max(ra * nc, 0.02), max(rb * nc, 0.015)
    protect = [shell_sdf]
    if nb[0] - na[0] > abs(rna - rnb) + 0.02:
        nasal = _round_cone(na, nb, rna, rnb, (1.0, h, 1.0))
        m.add("cavity", nasal)
        protect.append(nasal[0])
        if p.turbinate_density > 0:
            m.add("turb", _round_cone(na + np.array([0.03, 0, 0]), b, rna * 0.85, rnb * 0.7, (1.0, h, 1.0)))
    turb_axis = (na, b, h)
    s0_ = f0 + np.array([0.35 * br[0], 0.0, 0.0])
    rs0, rs1 = max(rf0 - 1.5 * t0, 0.01), max(min(rf1, ra * h) * nc - t0, 0.01)
    if np.linalg.norm(na - s0_) > abs(rs0 - rs1) + 0.01:
        sinus = _round_cone(s0_, na, rs0, rs1)
        m.add("cavity", sinus)
        protect.append(sinus[0])

    def protect_sdf(X, U, Z):
        d = protect[0](X, U, Z)
        for g in protect[1:]:
            d = np.minimum(d, g(X, U, Z))
        return d

    return protect_sdf, turb_axis


def _ears(m: _Model, p: SpeciesParams, hd: _Head, jit) -> tuple[float, float]:
    """Ear region: petrous bone (dense) and tympanic bulla (hollow capsule). Returns (x, u) of the ear."""
    bl, bc, br = hd.bl, hd.bc, hd.br
    x_ear = -0.5 + 0.33 * bl
    u_ear = bc[1] - 0.5 * br[1]
    for s in (-1, 1):
        ps = p.petrous_size * jit()
        c = np.array([x_ear, u_ear + 0.12 * br[1], s * 0.55 * br[2]])
        m.add("petrous", _ellipsoid(c, (1.2 * ps, 0.6 * ps, 0.75 * ps)))
        m.landmarks["petrous_left" if s > 0 else "petrous_right"] = c
        if p.bulla_size > 0.012:
            rbu = p.bulla_size * jit()
            cb = np.array([x_ear - 0.2 * rbu, bc[1] - 0.85 * br[1] - 0.2 * rbu, s * 0.42 * br[2]])
            m.add("outer", _ellipsoid(cb, (rbu * 1.1, rbu * 0.85, rbu)), k=0.02)
    return x_ear, u_ear


def _orbits(m: _Model, p: SpeciesParams, hd: _Head, sn: _Snout, protect_sdf: Sdf, jit) -> None:
    """Orbits: a socket carved into the face, opening sideways (f=0) to forward (f=1), with a rim."""
    f, r_o, x_o, u_o, t0, iow = hd.f, hd.r_o, hd.x_o, hd.u_o, hd.t0, sn.iow
    rim_t = 0.75 * p.zygomatic_thickness
    pb = p.postorbital_bar

    def orbit_guard(X, U, Z):  # keeps a wall of t0 around braincase, sinus and nasal cavity
        return np.maximum(0.0, t0 - protect_sdf(X, U, Z)) * 3.0

    for s in (-1, 1):
        ro = r_o * jit()
        zo = ((1 - f) * (iow + 0.55 * ro) + f * 1.12 * ro) * jit()
        o = np.array([x_o + 0.3 * f * ro, u_o, s * zo])
        d = np.array([0.2 + 1.6 * f, 0.25, s * (1.0 - f) * 1.6 + s * 0.15])
        d /= np.linalg.norm(d)
        m.landmarks["orbit_left" if s > 0 else "orbit_right"] = o
        m.add("orbit", _ellipsoid(o, (ro, ro, ro)), offset=orbit_guard)
        m.add("orbit", _round_cone(o, o + 0.35 * d, 0.92 * ro, 0.92 * ro), offset=orbit_guard)
        # The bony rim: front half always, postorbital processes growing with postorbital_bar.
        back = np.array([-1.0, 0.0, 0.0]) - (np.array([-1.0, 0, 0]) @ d) * d
        upv = np.cross(d, back) * s
        rc = o + 0.55 * ro * d
        rr = 0.88 * ro
        m.add("struts", _arc(rc, back, upv, rr, rim_t, 0.5 * np.pi, 1.5 * np.pi), k=0.01)
        if pb > 0.05:
            span = pb * 0.5 * np.pi
            m.add("struts", _arc(rc, back, upv, rr, rim_t * 0.9, 0.5 * np.pi - span, 0.5 * np.pi), k=0.01)
            m.add("struts", _arc(rc, back, upv, rr, rim_t * 0.9, -0.5 * np.pi, -0.5 * np.pi + span), k=0.01)


def _arches(m: _Model, p: SpeciesParams, hd: _Head, sn: _Snout, x_ear, u_ear, jit) -> dict[int, Arch]:
    """Zygomatic arches: from the maxilla below the orbit back to the squamosal above the ear.
    Returns each side's (s = -1 right, +1 left) Bezier control points (p0, p1, p2)."""
    r_o, x_o, u_o, br = hd.r_o, hd.x_o, hd.u_o, hd.br
    zt = p.zygomatic_thickness
    zw = p.zygomatic_width / 2
    arches: dict[int, Arch] = {}
    for s in (-1, 1):
        zws = zw * jit()
        r_at_o = sn.rost(x_o)[0]
        p0 = np.array([x_o + 0.45 * r_o, u_o - 1.0 * r_o, s * max(0.85 * r_at_o, 0.6 * zws)])
        p2 = np.array([x_ear + 0.05, u_ear + 0.3 * br[1], s * 0.88 * br[2]])
        p1 = np.array([0.5 * (p0[0] + p2[0]) - 0.2 * r_o, 0.5 * (p0[1] + p2[1]) - 0.3 * r_o, 0.0])
        p1[2] = 2 * s * max(zws, abs(p0[2]) + 0.01, abs(p2[2]) + 0.01) - 0.5 * (p0[2] + p2[2])
        arches[s] = (p0, p1, p2)
        m.add_all("struts", _bezier_tube(p0, p1, p2, zt * 1.3, zt, 8, (1.0, 1.7, 1.0)), k=0.015)
        # the maxillary root and the squamosal root blend into the skull
        m.add(
            "struts",
            _round_cone(
                p0, p0 + np.array([0.3 * r_o, 0.3 * r_o, -s * 0.5 * r_at_o]), zt * 1.3, zt * 0.9, (1.0, 1.7, 1.0)
            ),
            k=0.02,
        )
        m.add(
            "struts",
            _round_cone(p2, p2 * np.array([1, 1, 0.6]) + np.array([0.03, 0.0, 0]), zt * 1.2, zt * 1.4, (1.0, 1.6, 1.0)),
            k=0.02,
        )
    return arches
