"""The exception for input a user can fix.

Raised for bad config values, input files and options. `launch.py` prints its
message as one line without a traceback (`--verbose` shows it); any other
exception is an internal error and keeps its traceback. It lives in the
bottom layer so that every layer can raise it, and subclasses ValueError so
that `except ValueError` still catches it.
"""


class UserError(ValueError):
  """Bad input: the message names the file, column or option and the fix."""
