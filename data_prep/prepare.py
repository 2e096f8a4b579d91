r"""Builds the prepared datasets and prints what they hold.

    python -m data_prep.prepare [--data_dir=DIR] \
        [--sensor=enmap|prisma|emit|all]

Builds 'salinity' and 'soc' for the sensor(s) (skipping prepared ones) and
prints their sizes, samples per region and role fractions at the default
labelled and paired fractions.
"""
from collections.abc import Sequence

from absl import app
from absl import flags
import numpy as np

from data_prep import datasets
from data_prep import roles
from deepsalt_spectral import sensors

_DATA_DIR = flags.DEFINE_string(
    "data_dir", None,
    "TFDS data directory (default $DEEPSALT_DATA_DIR or "
    "~/.cache/deepsalt_jax/tfds).")
_SENSOR = flags.DEFINE_enum("sensor", "enmap", (*sensors.SENSORS, "all"),
                            "Sensor whose view is simulated, or all.")


def summary(name: str, sensor: str, data_dir: str | None) -> str:
  """Builds (if needed) and describes one dataset."""
  source, info = datasets.load(name, sensor, data_dir)
  records = [source[i] for i in range(len(source))]
  region = np.array([r["region"] for r in records])
  u = np.array([r["u"] for r in records])
  role = roles.assign_roles(u)  # At the default fractions.
  names = info.features["region"].names
  lines = [f"{info.full_name}: {len(source)} samples, lab "
           f"{info.features['lab'].shape[0]} bands, satellite "
           f"{info.features['satellite'].shape[0]} good bands; target: "
           f"{info.metadata['target']}"]
  lines += [f"  {n:<20} {np.sum(region == i):5d}" for i, n in enumerate(names)]
  lines.append("  roles: " + ", ".join(
      f"{r} {np.mean(role == i):.3f}" for i, r in enumerate(roles.ROLE_NAMES)
      if i != roles.LIBRARY))
  return "\n".join(lines)


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  chosen = sensors.SENSORS if _SENSOR.value == "all" else (_SENSOR.value,)
  for sensor in chosen:
    for name in datasets.BUILDERS:
      print(summary(name, sensor, _DATA_DIR.value), flush=True)


if __name__ == "__main__":
  app.run(main)
