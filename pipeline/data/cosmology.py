"""Flat LCDM distances and mass -> lensing-angle conversions, computed in-house.

No astropy at run time: distances come from a 96-point Gauss-Legendre integral of 1/E(z)
(exact to ~1e-14 for the smooth integrand); tests cross-check against astropy. Radiation is
ignored, like astropy's FlatLambdaCDM with its default Tcmb0 = 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

# SI constants (CODATA 2018 / IAU 2015 nominal values, as astropy uses them).
C_M_S = 299_792_458.0
G_SI = 6.674_30e-11
M_SUN_KG = 1.988_409_870_698_051e30
MPC_M = 3.085_677_581_491_367_3e22
ARCSEC_RAD = math.pi / 648_000.0

_GL_X, _GL_W = np.polynomial.legendre.leggauss(96)


@dataclass(frozen=True)
class FlatLCDM:
    """Flat Lambda-CDM background: H0 in km/s/Mpc, matter density Om0."""

    h0: float = 70.0
    om0: float = 0.3

    def efunc(self, z: float) -> float:
        return math.sqrt(self.om0 * (1.0 + z) ** 3 + (1.0 - self.om0))

    @property
    def hubble_distance_mpc(self) -> float:
        return C_M_S / 1e3 / self.h0

    def comoving_distance(self, z: float) -> float:
        """Line-of-sight comoving distance to redshift z [Mpc]."""
        if z < 0:
            raise ValueError(f"redshift must be >= 0, got {z}")
        zz = 0.5 * z * (_GL_X + 1.0)
        inv_e = 1.0 / np.sqrt(self.om0 * (1.0 + zz) ** 3 + (1.0 - self.om0))
        return float(self.hubble_distance_mpc * 0.5 * z * np.dot(_GL_W, inv_e))

    def angular_diameter_distance(self, z: float) -> float:
        return self.comoving_distance(z) / (1.0 + z)

    def angular_diameter_distance_z1z2(self, z1: float, z2: float) -> float:
        """Angular-diameter distance from z1 to z2 (flat universe) [Mpc]."""
        if z2 < z1:
            raise ValueError(f"need z2 >= z1, got {z1}, {z2}")
        return (self.comoving_distance(z2) - self.comoving_distance(z1)) / (1.0 + z2)

    def critical_density(self, z: float) -> float:
        """3 H(z)^2 / (8 pi G) [M_sun / Mpc^3]."""
        h_si = self.h0 * 1e3 / MPC_M * self.efunc(z)
        return 3.0 * h_si**2 / (8.0 * math.pi * G_SI) * MPC_M**3 / M_SUN_KG


@dataclass(frozen=True)
class LensingGeometry:
    """One lens plane at z_lens, sources at z_source: masses in M_sun -> angles in arcsec."""

    cosmo: FlatLCDM
    z_lens: float
    z_source: float

    def __post_init__(self) -> None:
        if not 0 < self.z_lens < self.z_source:
            raise ValueError(f"need 0 < z_lens < z_source, got {self.z_lens}, {self.z_source}")

    @cached_property
    def d_l(self) -> float:
        return self.cosmo.angular_diameter_distance(self.z_lens)

    @cached_property
    def d_s(self) -> float:
        return self.cosmo.angular_diameter_distance(self.z_source)

    @cached_property
    def d_ls(self) -> float:
        return self.cosmo.angular_diameter_distance_z1z2(self.z_lens, self.z_source)

    @cached_property
    def sigma_crit(self) -> float:
        """Critical surface density c^2 D_s / (4 pi G D_l D_ls) [M_sun / Mpc^2]."""
        factor = C_M_S**2 / (4.0 * math.pi * G_SI) * MPC_M / M_SUN_KG
        return factor * self.d_s / (self.d_l * self.d_ls)

    @cached_property
    def theta_e_per_sqrt_msun(self) -> float:
        """Einstein radius [arcsec] of a 1 M_sun point mass; theta_E scales as sqrt(M)."""
        rad2 = 4.0 * G_SI * M_SUN_KG / C_M_S**2 * self.d_ls / (self.d_l * self.d_s * MPC_M)
        return math.sqrt(rad2) / ARCSEC_RAD

    def einstein_radius(self, mass: torch.Tensor | float) -> torch.Tensor | float:
        """Point-mass Einstein radius [arcsec] of `mass` [M_sun]."""
        if isinstance(mass, torch.Tensor):
            return self.theta_e_per_sqrt_msun * torch.sqrt(mass)
        return self.theta_e_per_sqrt_msun * math.sqrt(mass)

    def nfw_angles(
        self, m200: torch.Tensor, concentration: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(Rs [arcsec], alpha_Rs [arcsec]) of an NFW halo, lenstronomy's NFW/TNFW convention.

        M200 is the mass inside r200 (200 x critical density at z_lens); alpha_Rs is the
        deflection at the projected scale radius of the untruncated profile.
        """
        rho_c = self.cosmo.critical_density(self.z_lens)
        r200 = (3.0 * m200 / (4.0 * math.pi * 200.0 * rho_c)) ** (1.0 / 3.0)  # Mpc
        c = concentration
        rho0 = 200.0 / 3.0 * rho_c * c**3 / (torch.log1p(c) - c / (1.0 + c))  # M_sun/Mpc^3
        rs = r200 / c
        rs_angle = rs / self.d_l / ARCSEC_RAD
        alpha_rs = rho0 * 4.0 * rs**2 * (1.0 + math.log(0.5)) / self.sigma_crit
        return rs_angle, alpha_rs / self.d_l / ARCSEC_RAD


def duffy_concentration(m200: torch.Tensor, z: float, h: float) -> torch.Tensor:
    """Mean NFW concentration of Duffy et al. (2008), M200 in M_sun (lenstronomy's c_M_z)."""
    return 5.22 * (m200 * h / 2e12) ** (-0.072) * (1.0 + z) ** (-0.42)
