"""Batched deflection angles [arcsec] in lenstronomy's conventions, as plain torch functions.

Coordinates x, y broadcast against per-image parameters: the simulator passes the pixel grid as
(1, H, W) and parameters as (B, 1, 1); the *_sum functions take K subhalos as (B, K) and sum
them on a trailing axis. Every function returns (alpha_x, alpha_y) in the dtype of x, so
float32 and float64 both work; the NFW family computes internally in float64 because its
closed forms cancel catastrophically near the centre. The *_coefficients / *_deflection
pairs split the per-image constants from the per-pixel work (the simulator computes the
former once per image in float64).
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor

# lenstronomy's numerical floors, copied so that images agree at the 1e-6 level.
SIE_S_SCALE = 1e-10  # SIE = NIE with this core (lenstronomy.LensModel.Profiles.sie)
ELLIPTICITY_MAX = 0.9999  # param_util.ellipticity2phi_q clips |e|
POINT_MASS_R_MIN = 1e-25
NFW_X_MIN = 1e-6
NFW_R_MIN = 1e-8
TNFW_X_MIN = 1e-3


def ellipticity_to_phi_q(e1: Tensor, e2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(phi, q, sqrt(1 - q^2)) from lenstronomy's (e1, e2); the last without cancellation."""
    phi = 0.5 * torch.atan2(e2, e1)
    c = torch.clamp(torch.sqrt(e1 * e1 + e2 * e2), max=ELLIPTICITY_MAX)
    q = (1.0 - c) / (1.0 + c)
    return phi, q, 2.0 * torch.sqrt(c) / (1.0 + c)


def _atan_over(eps: Tensor, z: Tensor) -> Tensor:
    """atan(eps z) / eps, continuous at eps = 0."""
    small = eps < 1e-4
    safe = torch.where(small, torch.ones_like(eps), eps)
    t = eps * z
    return torch.where(small, z * (1.0 - t * t / 3.0), torch.atan(safe * z) / safe)


def _atanh_over(eps: Tensor, z: Tensor) -> Tensor:
    """atanh(eps z) / eps, continuous at eps = 0."""
    small = eps < 1e-4
    safe = torch.where(small, torch.ones_like(eps), eps)
    t = eps * z
    return torch.where(small, z * (1.0 + t * t / 3.0), torch.atanh(safe * z) / safe)


def sie_coefficients(theta_e: Tensor, e1: Tensor, e2: Tensor) -> dict[str, Tensor]:
    """Per-lens SIE constants (b, s, q, eps, cos, sin), computed once per image."""
    phi, q, eps = ellipticity_to_phi_q(e1, e2)
    return {
        "b": theta_e * torch.sqrt(q),
        "s": SIE_S_SCALE / torch.sqrt(q),
        "q": q,
        "eps": eps,
        "cos": torch.cos(phi),
        "sin": torch.sin(phi),
    }


def sie_deflection(
    x: Tensor, y: Tensor, c: dict[str, Tensor], cx: Tensor | float, cy: Tensor | float
) -> tuple[Tensor, Tensor]:
    """SIE deflection from `sie_coefficients` (broadcast against x, y)."""
    b, s, q, eps, cos, sin = (c[k] for k in ("b", "s", "q", "eps", "cos", "sin"))
    dx, dy = x - cx, y - cy
    xr = dx * cos + dy * sin
    yr = -dx * sin + dy * cos
    psi = torch.sqrt(q * q * (s * s + xr * xr) + yr * yr)
    fx = b * _atan_over(eps, xr / (psi + s))
    fy = b * _atanh_over(eps, yr / (psi + q * q * s))
    return fx * cos - fy * sin, fx * sin + fy * cos


def sie(
    x: Tensor, y: Tensor, theta_e: Tensor, e1: Tensor, e2: Tensor, cx: Tensor, cy: Tensor
) -> tuple[Tensor, Tensor]:
    """Singular isothermal ellipsoid, lenstronomy 'SIE' (NIE with s = 1e-10).

    theta_E is the product-averaged Einstein radius; kappa = b / (2 sqrt(q^2 x'^2 + y'^2)) in the
    frame rotated by phi, with b = theta_E sqrt(q) (Keeton & Kochanek 1998).
    """
    return sie_deflection(x, y, sie_coefficients(theta_e, e1, e2), cx, cy)


def shear(
    x: Tensor, y: Tensor, gamma1: Tensor, gamma2: Tensor, ra0: float = 0.0, dec0: float = 0.0
) -> tuple[Tensor, Tensor]:
    """External shear, lenstronomy 'SHEAR': alpha = (g1 x + g2 y, g2 x - g1 y)."""
    dx, dy = x - ra0, y - dec0
    return gamma1 * dx + gamma2 * dy, gamma2 * dx - gamma1 * dy


def point_mass(
    x: Tensor, y: Tensor, theta_e: Tensor, cx: Tensor, cy: Tensor
) -> tuple[Tensor, Tensor]:
    """Point mass, lenstronomy 'POINT_MASS': alpha = theta_E^2 (x - c) / |x - c|^2."""
    dx, dy = x - cx, y - cy
    floor = max(POINT_MASS_R_MIN**2, torch.finfo(x.dtype).tiny)  # 1e-50 is 0 in float32
    r2 = torch.clamp(dx * dx + dy * dy, min=floor)
    w = theta_e * theta_e / r2
    return w * dx, w * dy


def point_mass_sum(
    x: Tensor, y: Tensor, theta_e: Tensor, cx: Tensor, cy: Tensor, chunk: int = 0
) -> tuple[Tensor, Tensor]:
    """Sum of K point masses; parameters (B, K), grid (1, H, W) -> (B, H, W).

    The masses sit on a trailing axis, (B, H, W, K) summed over K: torch.compile makes that
    one inner reduction per pixel (fast to compile and run). chunk > 0 sums slices of that
    many masses (bounded memory in eager mode); chunk = 0 sums all at once.
    """
    return _sum_over_k(point_mass, x, y, (theta_e, cx, cy), chunk)


def _sum_over_k(fn, x: Tensor, y: Tensor, params: tuple[Tensor, ...], chunk: int
                ) -> tuple[Tensor, Tensor]:
    k = params[0].shape[1]
    step = k if chunk <= 0 else chunk
    ax = ay = None
    if step == 1:  # one (B, H, W) pass per mass, accumulated: best for eager CPU
        for j in range(k):
            px, py = fn(x, y, *(v[:, j, None, None] for v in params))
            ax, ay = (px, py) if ax is None else (ax + px, ay + py)
        return ax, ay
    xk, yk = x[..., None], y[..., None]  # (1, H, W, 1)
    for k0 in range(0, k, step):
        sl = slice(k0, min(k, k0 + step))
        px, py = fn(xk, yk, *(v[:, None, None, sl] for v in params))  # (B, H, W, k)
        px, py = px.sum(-1), py.sum(-1)
        ax, ay = (px, py) if ax is None else (ax + px, ay + py)
    return ax, ay


def line_segment(
    x: Tensor,
    y: Tensor,
    theta_e2: Tensor,
    half_length: Tensor,
    angle: Tensor,
    cx: Tensor | float,
    cy: Tensor | float,
) -> tuple[Tensor, Tensor]:
    """Uniform line segment of total mass M (theta_E(M)^2 = theta_e2), closed form.

    The integral of point-mass deflections theta_E^2 / (2L) * (x - s u) / |x - s u|^2 over
    s in [-L, L] along the unit vector u at `angle`; with a = (x - c).u and b = (x - c).n:
        alpha_par  = lam / 2 * log(((a + L)^2 + b^2) / ((a - L)^2 + b^2))
        alpha_perp = lam * (atan((a + L) / b) - atan((a - L) / b))
                   = lam * atan2(2 L b, a^2 + b^2 - L^2),       lam = theta_E^2 / (2 L).
    The log is written as log1p(4 a L / ((a - L)^2 + b^2)) so that it keeps full relative
    precision far from the segment. The segment itself is a line of infinite density: alpha_perp
    jumps by 2 pi lam across it, and alpha_par diverges logarithmically at its ends.
    """
    c = line_coefficients(theta_e2, half_length, angle)
    return line_deflection(x, y, c, cx, cy)


def line_coefficients(theta_e2: Tensor, half_length: Tensor, angle: Tensor) -> dict[str, Tensor]:
    """Per-segment constants (ux, uy, L, lam), computed once per image."""
    return {
        "ux": torch.cos(angle),
        "uy": torch.sin(angle),
        "L": half_length,
        "lam": theta_e2 / (2.0 * half_length),
    }


def line_deflection(
    x: Tensor, y: Tensor, c: dict[str, Tensor], cx: Tensor | float, cy: Tensor | float
) -> tuple[Tensor, Tensor]:
    """Line-segment deflection from `line_coefficients`."""
    ux, uy, length, lam = c["ux"], c["uy"], c["L"], c["lam"]
    dx, dy = x - cx, y - cy
    a = dx * ux + dy * uy
    b = -dx * uy + dy * ux
    d_minus = torch.clamp((a - length) ** 2 + b * b, min=1e-30)
    a_par = 0.5 * lam * torch.log1p(torch.clamp(4.0 * a * length / d_minus, min=-1.0 + 1e-7))
    a_perp = lam * torch.atan2(2.0 * length * b, a * a + b * b - length * length)
    return a_par * ux - a_perp * uy, a_par * uy + a_perp * ux


def _nfw_f(x: Tensor) -> Tensor:
    """F(x) = atanh(sqrt(1 - x^2)) / sqrt(1 - x^2) (x < 1), atan(sqrt(x^2 - 1)) / sqrt(x^2 - 1)."""
    u = 1.0 - x * x
    near = u.abs() < 1e-3
    series = 1.0 + u / 3.0 + u * u / 5.0 + u**3 / 7.0 + u**4 / 9.0
    r = torch.sqrt(torch.where(near, torch.ones_like(u), u.abs()))
    inside = torch.log((1.0 + r) / x) / r  # = acosh(1/x) / r, accurate as x -> 0
    outside = torch.atan(r) / r
    return torch.where(near, series, torch.where(u > 0, inside, outside))


def _f64(v: Tensor | float, like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=torch.float64, device=like.device)


def _radial(
    x: Tensor, y: Tensor, cx: Tensor | float, cy: Tensor | float
) -> tuple[Tensor, Tensor, Tensor]:
    dx = x.to(torch.float64) - _f64(cx, x)
    dy = y.to(torch.float64) - _f64(cy, y)
    return dx, dy, torch.sqrt(dx * dx + dy * dy)


def nfw(
    x: Tensor, y: Tensor, rs: Tensor, alpha_rs: Tensor, cx: Tensor, cy: Tensor
) -> tuple[Tensor, Tensor]:
    """NFW, lenstronomy 'NFW' (Rs, alpha_Rs); float64 inside, result in x.dtype."""
    dx, dy, r = _radial(x, y, cx, cy)
    rs = torch.clamp(rs.to(torch.float64), min=1e-7)
    xx = torch.clamp(torch.clamp(r, min=NFW_R_MIN) / rs, min=NFW_X_MIN)
    g = torch.log(xx / 2.0) + _nfw_f(xx)
    return _nfw_deflection(alpha_rs, rs, g, xx, dx, dy, x.dtype)


def tnfw(
    x: Tensor,
    y: Tensor,
    rs: Tensor,
    alpha_rs: Tensor,
    r_trunc: Tensor,
    cx: Tensor,
    cy: Tensor,
) -> tuple[Tensor, Tensor]:
    """Truncated NFW (Baltz et al. 2009), lenstronomy 'TNFW' (Rs, alpha_Rs, r_trunc).

    g(x, tau) is a sum of O(log x) terms that cancel to O(x^2 log x) near the centre, so it is
    evaluated in float64 (relative error ~1e-12 at lenstronomy's floor x = 1e-3) and cast back.
    """
    dx, dy, r = _radial(x, y, cx, cy)
    rs = rs.to(torch.float64)
    tau = r_trunc.to(torch.float64) / rs
    xx = torch.clamp(torch.clamp(r, min=TNFW_X_MIN * rs) / rs, min=TNFW_X_MIN)
    t2 = tau * tau
    root = torch.sqrt(t2 + xx * xx)
    big_l = torch.log(xx / (tau + root))
    g = (
        t2
        / (t2 + 1.0) ** 2
        * (
            (t2 + 1.0 + 2.0 * (xx * xx - 1.0)) * _nfw_f(xx)
            + tau * math.pi
            + (t2 - 1.0) * torch.log(tau)
            + root * (-math.pi + big_l * (t2 - 1.0) / tau)
        )
    )
    return _nfw_deflection(alpha_rs, rs, g, xx, dx, dy, x.dtype)


def _nfw_deflection(alpha_rs: Tensor, rs: Tensor, g: Tensor, xx: Tensor, dx: Tensor,
                    dy: Tensor, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Deflection of an (N)FW-family profile from its enclosed-mass function g(x = r/Rs).

    lenstronomy normalises by the deflection at Rs (alpha_Rs), which fixes rho0; shared by
    NFW and TNFW so the two cannot drift apart.
    """
    rho0 = alpha_rs.to(torch.float64) / (4.0 * rs * rs * (1.0 + math.log(0.5)))
    a = 4.0 * rho0 * rs * g / (xx * xx)
    return (a * dx).to(dtype), (a * dy).to(dtype)


def tnfw_sum(
    x: Tensor,
    y: Tensor,
    rs: Tensor,
    alpha_rs: Tensor,
    r_trunc: Tensor,
    cx: Tensor,
    cy: Tensor,
    chunk: int = 0,
) -> tuple[Tensor, Tensor]:
    """Sum of K TNFW subhalos; parameters (B, K), grid (1, H, W) -> (B, H, W)."""
    return _sum_over_k(tnfw, x, y, (rs, alpha_rs, r_trunc, cx, cy), chunk)
