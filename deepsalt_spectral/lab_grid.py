"""What a lab library measured: its spectral axis, unit and quantity.

A dataset's lab grid is whatever its instrument measured: vis-NIR
reflectance in nm (the built-in benchmark's 180-band grid) or MIR FTIR
absorbance in wavenumbers (cm-1), for example. The grid is stated in the
dataset's metadata and travels with a run, so the teacher's input size and
every physics matrix come from it, never from a constant.

Spectra keep the order of `axis` (increasing). Physics (SRF resampling to a
sensor, its inverse) needs reflectance in nm covering the sensor's bands;
`physics_problem` says why a grid cannot have it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from deepsalt_spectral import errors
from deepsalt_spectral import resampling

UNITS = ("nm", "cm-1")
QUANTITIES = ("reflectance", "absorbance")
# Mean SRF support a sensor band needs on the lab grid for physics.
MIN_COVERAGE = 0.9


@dataclasses.dataclass(frozen=True, eq=False)
class LabGrid:
  """A lab spectral axis.

  Attributes:
    axis: [n] increasing band positions in `unit`.
    unit: 'nm' (wavelength) or 'cm-1' (wavenumber).
    quantity: 'reflectance' (fraction) or 'absorbance' (log10(1/R)).
  """
  axis: np.ndarray
  unit: str = "nm"
  quantity: str = "reflectance"

  def __post_init__(self):
    if self.unit not in UNITS:
      raise errors.UserError(f"Lab grid unit {self.unit!r}: use one of "
                             f"{', '.join(UNITS)}.")
    if self.quantity not in QUANTITIES:
      raise errors.UserError(f"Lab grid quantity {self.quantity!r}: use one "
                             f"of {', '.join(QUANTITIES)}.")
    axis = resampling.check_grid(self.axis, f"lab grid ({self.unit})")
    object.__setattr__(self, "axis", axis)

  @property
  def size(self) -> int:
    return int(self.axis.size)

  @property
  def wavelength_nm(self) -> np.ndarray:
    """[n] wavelengths in nm, in the order of `axis`."""
    return self.axis if self.unit == "nm" else 1e7 / self.axis

  def describe(self) -> str:
    lo, hi = self.axis[0], self.axis[-1]
    return f"{self.size} bands, {lo:g}-{hi:g} {self.unit}, {self.quantity}"

  def physics_problem(self, wavelength: np.ndarray,
                      fwhm: np.ndarray) -> str:
    """Why the SRF physics cannot carry sensor bands to this grid ('' if it
    can): absorbance, wavenumbers or a range that misses the bands."""
    if self.quantity != "reflectance" or self.unit != "nm":
      return (f"the lab grid holds {self.quantity} in {self.unit} "
              f"({self.describe()}), and the physics maps reflectance in nm")
    coverage = resampling.band_coverage(self.axis, wavelength, fwhm)
    if coverage.mean() < MIN_COVERAGE:
      return (f"the lab grid ({self.describe()}) covers "
              f"{coverage.mean():.0%} of the sensor's band responses "
              f"({float(np.min(wavelength)):g}-{float(np.max(wavelength)):g}"
              f" nm); physics needs {MIN_COVERAGE:.0%}")
    return ""

  def to_json(self) -> dict[str, Any]:
    return {"axis": self.axis.tolist(), "unit": self.unit,
            "quantity": self.quantity}

  @classmethod
  def from_json(cls, value: dict[str, Any]) -> LabGrid:
    return cls(np.asarray(value["axis"], np.float64), value["unit"],
               value["quantity"])

  def __eq__(self, other: object) -> bool:
    return (isinstance(other, LabGrid) and self.unit == other.unit and
            self.quantity == other.quantity and
            self.axis.shape == other.axis.shape and
            bool(np.all(self.axis == other.axis)))

  def __hash__(self) -> int:
    return hash((self.unit, self.quantity, self.axis.tobytes()))


def visnir() -> LabGrid:
  """The built-in benchmark's grid (`resampling.lab_wavelengths()`)."""
  return LabGrid(resampling.lab_wavelengths(), "nm", "reflectance")
