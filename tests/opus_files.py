"""Minimal Bruker OPUS files written in tests (no sample files ship offline).

The layout `brukeropus` parses (brukeropus/file/parse.py, directory.py):
- header (24 bytes): signature 0a 0a fe fe, version (float64), directory
  offset, maximum and actual block counts (int32 each);
- directory: per block (type code, size in 32-bit words, offset) as int32,
  the directory itself included; the type code packs six fields (bits 0-1,
  2-3, 4-9, 10-16, 17-18, 19-21);
- a data status parameter block (field 2 = 1): 'KEY\\0', (type, size in
  16-bit words) int16, value (int32, float64 or a NUL-padded string), ...,
  'END'; it gives the points, first and last x, y scale and x unit;
- the data block (field 2 = 0) of float32 y values, paired with its status
  block by the other five fields (field 3 = 4: absorbance, key 'a').
"""
import pathlib
import struct

import numpy as np

SIGNATURE = b"\n\n\xfe\xfe"
_ABSORBANCE = 4  # Field 3 of the type code.
_DIRECTORY = (0, 0, 0, 13, 0, 0)


def _type_code(fields) -> int:
  shifts = (0, 2, 4, 10, 17, 19)
  return sum(f << s for f, s in zip(fields, shifts))


def _param(key: str, value) -> bytes:
  if isinstance(value, int):
    kind, body = 0, struct.pack("<i", value)
  elif isinstance(value, float):
    kind, body = 1, struct.pack("<d", value)
  else:
    body = value.encode("latin-1") + b"\0"
    body += b"\0" * (len(body) % 2)
    kind = 2
  return key.encode() + b"\0" + struct.pack("<2h", kind, len(body) // 2) + body


def _pad(block: bytes) -> bytes:
  return block + b"\0" * (-len(block) % 4)


def write_opus(path: pathlib.Path, wavenumber, y, x_unit: str = "WN",
               kind: int = _ABSORBANCE) -> pathlib.Path:
  """An OPUS file holding one spectrum `y` at evenly spaced `wavenumber`s
  (stored in that order, as OPUS does: first and last x, point count)."""
  wavenumber = np.asarray(wavenumber, np.float64)
  y = np.asarray(y, np.float32)
  status = _pad(b"".join([
      _param("DPF", 1), _param("NPT", int(y.size)),
      _param("FXV", float(wavenumber[0])), _param("LXV", float(wavenumber[-1])),
      _param("CSF", 1.0), _param("MXY", float(y.max())),
      _param("MNY", float(y.min())), _param("DXU", x_unit),
      b"END\0" + struct.pack("<2h", 0, 0)]))
  data = y.tobytes()
  directory_start, n_blocks = 24, 3
  status_start = directory_start + 12 * n_blocks
  data_start = status_start + len(status)
  entries = [(_DIRECTORY, 12 * n_blocks, directory_start),
             ((3, 3, 1, kind, 0, 0), len(status), status_start),
             ((3, 3, 0, kind, 0, 0), len(data), data_start)]
  directory = b"".join(struct.pack("<3i", _type_code(t), size // 4, start)
                       for t, size, start in entries)
  header = SIGNATURE + struct.pack("<d3i", 920622.0, directory_start,
                                   n_blocks, n_blocks)
  path.write_bytes(header + directory + status + data)
  return path
