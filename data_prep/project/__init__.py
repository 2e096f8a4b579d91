"""A user's own data (lab library, field points, scenes) as a TFDS dataset.

`inputs` reads and checks the files, `placement` puts points and library
samples on scene pixels, `builder` writes the records, `folds` splits them
for spatial cross-validation.
"""
from data_prep.project.builder import DeepsaltProject
from data_prep.project.builder import ProjectConfig
from data_prep.project.builder import settings_key
from data_prep.project.folds import spatial_folds
