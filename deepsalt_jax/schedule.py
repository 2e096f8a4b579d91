"""When a training loop acts: log, checkpoint, validate."""


def is_time(step: int, every: int, total: int) -> bool:
  """Whether to act after `step`: every `every` steps and at the last."""
  return step == total or (every > 0 and step % every == 0)
