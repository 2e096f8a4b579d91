"""The final model validation chose on own data, saved for mapping.

Own data's cross-validation chooses a final model on every point
(`model_choice`): one candidate, or a non-negative stack of candidates in
the target transform's space. `save` keeps what a map needs in
<workdir>/final_model/, with no pickle:
- model.json: the winner, the stack's weights (1 for a lone winner), the
  candidate it is hedged with (`model_choice.Choice.hedge`), the target
  transform, the seed and the scikit-learn version;
- arrays.npz: PLSR as its numbers (linear: centre, coefficients and
  intercept on the sensor's good bands, in the transform's space); for the
  random forest and the pooled MLP their training arrays, re-fitted with
  the same seed when a map starts (seconds): a pickled scikit-learn model
  runs code when loaded and is not portable across versions;
- calibration.json: the winner's interval, conformal like the student's on
  its out-of-fold predictions; without an MC spread it is constant in the
  transform's space.
The networks (the students, the teacher on the pixels) are the run's
checkpoints. A lone student is mapped as before, with its own calibration.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

from absl import logging
from etils import epath
import numpy as np
import sklearn

from deepsalt_jax import baselines
from deepsalt_jax import calibration
from deepsalt_jax import model_choice
from deepsalt_jax import paths
from deepsalt_jax import targets

FOLDER = "final_model"
KIND = "validation's final model"
STUDENT = "student"  # The default student; candidates go by their names.
TEACHER = "teacher (pixels)"
# The scikit-learn candidates and how each is fitted on (x, transformed y).
FITS: dict[str, Callable[..., baselines.Predictor]] = {
    "PLSR": baselines.plsr, "random forest": baselines.random_forest,
    "pooled MLP": baselines.pooled_mlp}
_REFITTED = ("random forest", "pooled MLP")


@dataclasses.dataclass(frozen=True)
class FinalModel:
  """The winner, its members' predictors and its calibration.

  Attributes:
    choice: the final choice (winner, weights).
    transform: the target transform (targets.TRANSFORMS).
    fitted: {scikit-learn member: predictor of the transformed target}.
    calibration: the winner's interval (None for a lone student: its own).
  """
  choice: model_choice.Choice
  transform: str
  fitted: dict[str, baselines.Predictor]
  calibration: dict[str, Any] | None

  @property
  def members(self) -> list[str]:
    return members(self.choice)

  @property
  def networks(self) -> list[str]:
    """The members that are the run's networks: a student (by its name) or
    the teacher on the pixels."""
    return [n for n in self.members if n not in FITS]

  @property
  def name(self) -> str:
    return describe(self.choice)

  def predict(self, x: np.ndarray,
              networks: dict[str, np.ndarray]) -> np.ndarray:
    """EC of the spectra `x` ([n, sensor's good bands]), never below 0,
    given the network members' predictions of them (target units)."""
    _, inverse = targets.on_numpy(self.transform)
    predictions = dict(networks, **{n: inverse(f(x))
                                    for n, f in self.fitted.items()})
    return np.maximum(self.choice.predict(predictions, self.transform), 0.0)


def members(choice: model_choice.Choice) -> list[str]:
  """The candidates the winner's prediction reads (with its hedge)."""
  read = ([choice.winner] if choice.winner != model_choice.STACKED else
          [n for n, w in choice.weights.items() if w > 0])
  return read + ([choice.hedge] if choice.hedge not in ("", *read) else [])


def describe(choice: model_choice.Choice) -> str:
  """The winner in words: 'PLSR', 'a stack of PLSR (0.71), student
  (0.29)', or either 'and PLSR, their mean' when hedged with PLSR."""
  if choice.winner != model_choice.STACKED:
    name = choice.winner
  else:
    name = "a stack of " + ", ".join(
        f"{n} ({w:.2f})" for n, w in choice.weights.items() if w > 0)
  return f"{name} and {choice.hedge}, their mean" if choice.hedge else name


def save(directory: epath.PathLike, choice: model_choice.Choice,
         transform: str, seed: int,
         inputs: dict[str, tuple[np.ndarray, np.ndarray]],
         fitted_calibration: dict[str, Any] | None) -> None:
  """Writes the final model into `directory`.

  Args:
    choice: the final choice.
    inputs: {scikit-learn candidate: (x, transformed y) it is fitted on}
      (those of the members at least).
    fitted_calibration: the winner's (None for a lone student).
  """
  directory = epath.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {}
  for name in members(choice):
    if name == "PLSR":
      model = FITS[name](*inputs[name], seed=seed)
      arrays.update({"PLSR/centre": model.centre, "PLSR/coef": model.coef,
                     "PLSR/intercept": np.float64(model.intercept)})
    elif name in _REFITTED:
      arrays.update({f"{name}/x": inputs[name][0],
                     f"{name}/y": inputs[name][1]})
  with (directory / "arrays.npz").open("wb") as f:
    np.savez(f, **arrays)
  if fitted_calibration is not None:
    calibration.save(fitted_calibration, directory)
  # Written last: a folder with model.json is complete.
  paths.write_atomically(directory / "model.json", json.dumps({
      "kind": KIND, "choice": choice.to_json(), "name": describe(choice),
      "transform": transform, "seed": seed,
      "scikit-learn": sklearn.__version__}, indent=2) + "\n")


def load(workdir: epath.PathLike) -> FinalModel | None:
  """The saved final model of the run in `workdir`, None without one."""
  directory = epath.Path(workdir) / FOLDER
  if not (directory / "model.json").exists():
    return None
  saved = json.loads((directory / "model.json").read_text())
  choice = model_choice.Choice(**saved["choice"])
  with (directory / "arrays.npz").open("rb") as f:
    arrays = dict(np.load(f))
  fitted = {}
  for name in members(choice):
    if name == "PLSR":
      fitted[name] = baselines.Linear(arrays["PLSR/centre"],
                                      arrays["PLSR/coef"],
                                      float(arrays["PLSR/intercept"]))
    elif name in _REFITTED:
      if saved["scikit-learn"] != sklearn.__version__:
        logging.warning("%s was fitted by scikit-learn %s, re-fitted by %s: "
                        "close, not necessarily equal.", name,
                        saved["scikit-learn"], sklearn.__version__)
      fitted[name] = FITS[name](arrays[f"{name}/x"], arrays[f"{name}/y"],
                                seed=saved["seed"])
  return FinalModel(choice, saved["transform"], fitted,
                    calibration.load(directory))
