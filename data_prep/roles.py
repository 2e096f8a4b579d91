"""Sample roles in the transfer setting.

The benchmark draws them from a per-sample uniform u: each prepared record
carries u in [0, 1), a deterministic function of the dataset seed and the
sample id, so the role of a sample is the same for every sensor and changing
the fractions only moves samples between neighbouring roles
(u < labelled <= paired <= unlabelled). A user's own data stores each
record's role (`data_prep.project`): what a sample has decides it.
"""
import hashlib

import numpy as np

from deepsalt_spectral import errors

# LABELLED: a pixel with a ground EC value; PAIRED: a pixel with a lab
# spectrum of the same place; UNLABELLED: a pixel alone; LIBRARY: a lab
# spectrum without a pixel (own data only).
LABELLED, PAIRED, UNLABELLED, LIBRARY = 0, 1, 2, 3
ROLE_NAMES = ("labelled", "paired", "unlabelled", "library")
# Default fractions of the salinity benchmark (configs/common.py).
# 5 % labelled: the few-ground-samples setting the method is for (at 10 % a
# plain network on the pixels alone tied the student).
LABELLED_FRACTION = 0.05  # Satellite pixels with a ground EC value.
PAIRED_FRACTION = 0.4  # Pixels with a lab spectrum of the same place.


def uniform(sample_ids, seed: int) -> np.ndarray:
  """Deterministic u in [0, 1) (float32) per sample id, from a SHA-256 hash."""
  out = np.empty(len(sample_ids), np.float32)
  for i, sample_id in enumerate(sample_ids):
    digest = hashlib.sha256(f"{seed}/{sample_id}".encode()).digest()
    # 24 bits: exactly representable in float32, so u < 1 stays true.
    out[i] = int.from_bytes(digest[:3], "big") / 2.0**24
  return out


def assign_roles(u, labelled_fraction: float = LABELLED_FRACTION,
                 paired_fraction: float = PAIRED_FRACTION) -> np.ndarray:
  """Roles (int64) of samples with uniform numbers u.

  u < labelled_fraction -> LABELLED; u < labelled_fraction + paired_fraction
  -> PAIRED; otherwise UNLABELLED.
  """
  if not (0.0 <= labelled_fraction and 0.0 <= paired_fraction and
          labelled_fraction + paired_fraction <= 1.0):
    raise errors.UserError(
        "Role fractions must be >= 0 with labelled_fraction + paired_fraction "
        f"<= 1, got labelled_fraction={labelled_fraction}, "
        f"paired_fraction={paired_fraction}.")
  u = np.asarray(u)
  return np.where(u < labelled_fraction, LABELLED,
                  np.where(u < labelled_fraction + paired_fraction, PAIRED,
                           UNLABELLED)).astype(np.int64)
