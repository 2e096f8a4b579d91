"""How EC was measured, and conversions between methods.

Soil EC depends on how much water the extract holds: the saturated paste
(ECe) and 1:5, 1:2.5 or 1:2 soil:water extracts give different numbers for
the same soil, and the factors between them depend on texture. So a
project's EC carries its method everywhere, and a library measured with
another method than the field points enters only through a conversion the
user declares with its source (`library_factor`).
"""
from typing import Optional

import numpy as np

from deepsalt_spectral import errors

METHODS = {
    "ECe": "saturated paste extract",
    "EC1:5": "1:5 soil:water extract",
    "EC1:2.5": "1:2.5 soil:water extract",
    "EC1:2": "1:2 soil:water extract",
}
# FAO salinity classes (deepsalt_jax.metrics) are defined on ECe.
CLASS_METHOD = "ECe"


def label(method: Optional[str] = None) -> str:
  """How outputs name the target: 'EC (ECe, dS/m)', or 'EC (dS/m)'."""
  return f"EC ({method}, dS/m)" if method else "EC (dS/m)"


def check(method: str, field: str) -> str:
  """`method` if it is one of METHODS, else a UserError naming `field`."""
  if method not in METHODS:
    raise errors.UserError(
        f"{field}={method!r} is not an EC method; use one of "
        f"{', '.join(METHODS)} ({', '.join(METHODS.values())}).")
  return method


def library_factor(library_method: str, method: str, factor: Optional[float],
                   source: str) -> tuple[float, str]:
  """(factor from library EC to `method`, a sentence naming the conversion).

  Raises:
    UserError: the methods differ and no factor with its source is given.
  """
  check(method, "data.ec_method")
  if library_method in ("", method):
    return 1.0, ""
  check(library_method, "data.library_ec_method")
  if factor is None or factor <= 0 or not source.strip():
    raise errors.UserError(
        f"The library's EC is {library_method} but data.ec_method is "
        f"{method}: methods are never mixed silently. Declare the conversion "
        f"with --config.data.ec_conversion.factor=<{method} per unit "
        f"{library_method}> and --config.data.ec_conversion.source='<where "
        "the factor comes from>' (factors depend on texture; name the "
        "study or your own calibration), or give EC measured the same way.")
  return factor, (f"library EC ({library_method}) x {factor:g} -> {method}; "
                  f"source: {source.strip()}")


def check_column(values, declared: str, where: str, rows) -> None:
  """Refuses rows whose own method column differs from the declared one."""
  values = np.asarray(values, dtype=object)
  text = np.array([str(v).strip() for v in values])
  wrong = (text != declared) & (text != "") & (text != "nan")
  if wrong.any():
    listed = ", ".join(f"row {r} ({t})" for r, t in
                       zip(np.asarray(rows)[wrong][:10], text[wrong][:10]))
    raise errors.UserError(
        f"{where}: the ec_method column says another method than "
        f"{declared} at {listed}. One file holds one method: convert those "
        "values (or set the declared method to theirs).")
