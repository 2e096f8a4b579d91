"""The base of every TFDS builder here: array_record files, no TensorFlow."""
import inspect

from etils import epath
import tensorflow_datasets as tfds


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder):
  """Writes array_record (read back with `tfds.data_source`)."""

  def __init__(self, *, file_format: str = "array_record", **kwargs):
    super().__init__(file_format=file_format, **kwargs)

  # TFDS's own lookup of a builder's source file needs the importlib_resources
  # backport (not a requirement); the class's module file is the same path.
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(inspect.getfile(cls))
