"""Signed-distance primitives of the procedural skulls (numpy, evaluated on broadcast grids).

Each primitive returns ``(f, lo, hi, slack)``: ``f(X, U, Z)`` the signed distance (negative inside)
at broadcastable float32 arrays of the anatomical frame (X anterior, U dorsal, Z lateral; units of
the skull length L), ``lo``/``hi`` the corners of its bounding box (x, u, z), and ``slack`` how much
the SDF may underestimate the distance (the bounding-box margin factor). Points are (x, u, z) tuples.
"""

from __future__ import annotations

import math

import numpy as np

_F = np.float32


def _smin(a, b, k):
    if k <= 0:
        return np.minimum(a, b)
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _ellipsoid(c, r):
    cx, cu, cz = (float(v) for v in c)
    rx, ru, rz = (float(v) for v in r)

    def f(X, U, Z):
        px, pu, pz = (X - cx) / rx, (U - cu) / ru, (Z - cz) / rz
        k0 = np.sqrt(px * px + pu * pu + pz * pz)
        k1 = np.sqrt((px / rx) ** 2 + (pu / ru) ** 2 + (pz / rz) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)

    lo = np.array([cx - rx, cu - ru, cz - rz])
    hi = np.array([cx + rx, cu + ru, cz + rz])
    return f, lo, hi, min(max(rx, ru, rz) / min(rx, ru, rz), 4.0)


def _round_cone(a, b, ra, rb, scale=(1.0, 1.0, 1.0)):
    """Tapered capsule from a (radius ra) to b (radius rb); ``scale`` stretches it per axis."""
    s = np.asarray(scale, float)
    a_ = np.asarray(a, float) / s
    b_ = np.asarray(b, float) / s
    ba = b_ - a_
    l2 = float(ba @ ba)
    rr = float(ra - rb)
    if l2 <= rr * rr + 1e-12:  # degenerate: the larger sphere contains the cone
        big = (a_, ra) if ra >= rb else (b_, rb)
        c = big[0] * s
        return _ellipsoid(c, big[1] * s)
    a2 = l2 - rr * rr
    il2 = 1.0 / l2
    smin_ = float(s.min())
    sx, su, sz = (float(v) for v in s)

    def f(X, U, Z):
        px, pu, pz = X / sx - a_[0], U / su - a_[1], Z / sz - a_[2]
        y = px * ba[0] + pu * ba[1] + pz * ba[2]
        z = y - l2
        qx, qu, qz = px * l2 - ba[0] * y, pu * l2 - ba[1] * y, pz * l2 - ba[2] * y
        x2 = qx * qx + qu * qu + qz * qz
        y2 = y * y * l2
        z2 = z * z * l2
        k = math.copysign(1.0, rr) * rr * rr * x2
        d_mid = (np.sqrt(x2 * a2 * il2) + y * rr) * il2 - ra
        d_b = np.sqrt(x2 + z2) * il2 - rb
        d_a = np.sqrt(x2 + y2) * il2 - ra
        d = np.where(np.sign(y) * a2 * y2 < k, d_a, d_mid)
        d = np.where(np.sign(z) * a2 * z2 > k, d_b, d)
        return d * smin_

    pa, pb = np.asarray(a, float), np.asarray(b, float)
    lo = np.minimum(pa - ra * s, pb - rb * s)
    hi = np.maximum(pa + ra * s, pb + rb * s)
    return f, lo, hi, float(s.max() / s.min())


def _bezier(p0, p1, p2, t):
    p0, p1, p2 = (np.asarray(p, float) for p in (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def _bezier_tube(p0, p1, p2, r0, r1, nseg=6, scale=(1.0, 1.0, 1.0)):
    """A tube of radius r0 → r1 along a quadratic Bezier curve (union of tapered capsules)."""
    ts = np.linspace(0.0, 1.0, nseg + 1)
    pts = [_bezier(p0, p1, p2, t) for t in ts]
    rs = [r0 + (r1 - r0) * t for t in ts]
    return [_round_cone(pts[i], pts[i + 1], rs[i], rs[i + 1], scale) for i in range(nseg)]


def _plate(a, b, ra, rb, half_thickness):
    """A flat bony plate: a stadium in the (x, u) plane from a (radius ra) to b (radius rb), of
    half thickness ``half_thickness`` along z, its mid plane z moving linearly from a_z to b_z."""
    ax, au, az = (float(v) for v in a)
    bx, bu, bz = (float(v) for v in b)
    dx, du = bx - ax, bu - au
    l2 = max(dx * dx + du * du, 1e-12)
    t_ = float(half_thickness)

    def f(X, U, Z):
        t = np.clip(((X - ax) * dx + (U - au) * du) / l2, 0.0, 1.0)
        ex, eu = X - ax - t * dx, U - au - t * du
        d2 = np.sqrt(ex * ex + eu * eu) - (ra + (rb - ra) * t - t_)
        w = Z - (az + (bz - az) * t)
        return np.sqrt(np.maximum(d2, 0.0) ** 2 + w * w) + np.minimum(d2, 0.0) - t_

    r = max(ra, rb)
    lo = np.array([min(ax, bx) - r, min(au, bu) - r, min(az, bz) - t_])
    hi = np.array([max(ax, bx) + r, max(au, bu) + r, max(az, bz) + t_])
    return f, lo, hi, 1.0


def _hull2d(pts: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of 2D points, monotone chain."""
    order = sorted(map(tuple, np.asarray(pts, float)))

    def half(seq):
        out: list = []
        for q in seq:
            while (
                len(out) >= 2
                and ((out[-1][0] - out[-2][0]) * (q[1] - out[-2][1]) - (out[-1][1] - out[-2][1]) * (q[0] - out[-2][0]))
                <= 0
            ):
                out.pop()
            out.append(q)
        return out

    lower, upper = half(order), half(order[::-1])
    return np.array(lower[:-1] + upper[:-1])


def _poly_plate(vertices, half_thickness, rounding=0.0):
    """A flat plate: the convex hull of 3D ``vertices`` projected on the (x, u) plane (corners
    rounded by ``rounding``), of half thickness ``half_thickness`` about the mid surface
    z = a + b x + c u fitted through them."""
    v = np.asarray(vertices, float)
    hull = _hull2d(v[:, :2])
    if rounding > 0:  # pull the corners in, then grow the outline back by ``rounding``
        cen = hull.mean(axis=0)
        dist = np.linalg.norm(hull - cen, axis=1, keepdims=True)
        hull = cen + (hull - cen) * np.clip(1.0 - rounding / np.maximum(dist, 1e-9), 0.2, 1.0)
    A = np.c_[np.ones(len(v)), v[:, 0], v[:, 1]]
    za, zb, zc = np.linalg.lstsq(A, v[:, 2], rcond=None)[0]
    e = np.roll(hull, -1, axis=0) - hull
    nrm = np.c_[e[:, 1], -e[:, 0]] / np.linalg.norm(e, axis=1)[:, None]  # outward for CCW
    off = (nrm * hull).sum(axis=1)
    t_ = float(half_thickness)

    def f(X, U, Z):
        inner: np.ndarray | None = None  # inside a convex polygon: the largest half-plane distance (exact)
        outer: np.ndarray | None = None  # outside: the distance to the nearest edge
        for (nx, nu), o, (ax, au), (ex, eu) in zip(nrm, off, hull, e):
            di = nx * X + nu * U - o
            inner = di if inner is None else np.maximum(inner, di)
            t = np.clip(((X - ax) * ex + (U - au) * eu) / (ex * ex + eu * eu), 0.0, 1.0)
            dd = (X - ax - t * ex) ** 2 + (U - au - t * eu) ** 2
            outer = dd if outer is None else np.minimum(outer, dd)
        assert inner is not None and outer is not None  # the hull has edges
        d2 = np.where(inner > 0, np.sqrt(outer), inner) - rounding
        w = Z - (za + zb * X + zc * U)
        return np.sqrt(np.maximum(d2, 0.0) ** 2 + w * w) + np.minimum(d2, 0.0) - t_

    lo = v.min(axis=0) - t_
    hi = v.max(axis=0) + t_
    return f, lo, hi, 1.0


def _arc(c, e1, e2, radius, r, theta0, theta1):
    """Part of a torus: the circle of ``radius`` around c in the plane (e1, e2), angles θ0 → θ1
    (from e1 towards e2), swept by a ball of radius r."""
    c = np.asarray(c, float)
    e1 = np.asarray(e1, float)
    e1 = e1 / np.linalg.norm(e1)
    e2 = np.asarray(e2, float)
    e2 = e2 - (e2 @ e1) * e1
    e2 = e2 / np.linalg.norm(e2)
    n = np.cross(e1, e2)
    tm, half = 0.5 * (theta0 + theta1), 0.5 * abs(theta1 - theta0)

    def f(X, U, Z):
        qx, qu, qz = X - c[0], U - c[1], Z - c[2]
        a = qx * e1[0] + qu * e1[1] + qz * e1[2]
        b = qx * e2[0] + qu * e2[1] + qz * e2[2]
        w = qx * n[0] + qu * n[1] + qz * n[2]
        th = np.arctan2(b, a) - tm
        th = (th + np.pi) % (2 * np.pi) - np.pi
        th = np.clip(th, -half, half) + tm
        da, db = a - radius * np.cos(th), b - radius * np.sin(th)
        return np.sqrt(da * da + db * db + w * w) - r

    ext = radius + r
    return f, c - ext, c + ext, 1.0
