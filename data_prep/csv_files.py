"""A user's CSV files as spreadsheets save them.

Excel in much of Europe saves "CSV" with ';' between fields, decimal commas
and a UTF-8 byte-order mark. The separator is read from the header line
(',', ';' or tab, whichever it holds most of); with ';' or tab, numbers may
carry a decimal comma. An empty file, or a header without any of the three
separators, is refused with the fix.
"""
from __future__ import annotations

import csv
import dataclasses
import gzip
import pathlib

import pandas as pd

from deepsalt_spectral import errors

SEPARATORS = {",": "','", ";": "';'", "\t": "tab"}
# A number written with a decimal comma ('-0,25', '3,5').
_DECIMAL_COMMA = r"^\s*([-+]?\d*),(\d+)\s*$"
ENCODING = "utf-8-sig"  # Plain UTF-8 read as is; a BOM dropped.


@dataclasses.dataclass(frozen=True)
class Dialect:
  sep: str
  decimal: str


def _first_line(path: pathlib.Path) -> str:
  opener = gzip.open if path.suffix == ".gz" else open
  with opener(path, "rt", encoding=ENCODING, newline="") as f:
    return f.readline()


def dialect(path: pathlib.Path) -> Dialect:
  """The file's separator and decimal mark, from its header line."""
  line = _first_line(path)
  if not line.strip():
    raise errors.UserError(
        f"{path} is empty (no header line); save the table with its column "
        "names in the first line.")
  sep = max(SEPARATORS, key=line.count)
  if not line.count(sep):
    raise errors.UserError(
        f"{path}: its header line {line.strip()[:80]!r} has no field "
        f"separator ({', '.join(SEPARATORS.values())}); save the table as "
        "CSV with one of them between the columns.")
  return Dialect(sep, "." if sep == "," else ",")


def header(path: pathlib.Path) -> list[str]:
  """The header as written (pandas renames duplicates, so read it raw)."""
  row = next(csv.reader([_first_line(path)], delimiter=dialect(path).sep))
  return [c.strip() for c in row]


def read(path: pathlib.Path, **kwargs) -> pd.DataFrame:
  """pd.read_csv in the file's dialect; with decimal commas, text columns
  (dtype=str) of numbers get decimal points, so pd.to_numeric reads them."""
  found = dialect(path)
  frame = pd.read_csv(path, sep=found.sep, decimal=found.decimal,
                      encoding=ENCODING, **kwargs)
  if found.decimal == ",":
    text = [c for c in frame if not pd.api.types.is_numeric_dtype(frame[c])]
    frame[text] = frame[text].replace(_DECIMAL_COMMA, r"\1.\2", regex=True)
  return frame
