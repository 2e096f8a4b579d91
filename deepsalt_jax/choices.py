"""The names a config chooses from, each list declared here once.

The configs read them without importing JAX or TFDS; the modules that map
each name to what it stands for check that their tables hold these names.
Sensors are deepsalt_spectral.sensors.SENSORS.
"""
# What a config trains (launch.py runs each its own way).
JOBS = ("teacher", "distill", "cross_validation")
# Built-in datasets (data_prep.datasets.BUILDERS).
DATASETS = ("salinity", "soc")
# Where the teacher reads spectra (models/build.py).
SPACES = ("auto", "lab", "sensor")
# Spectral encoders (models/encoder.ENCODERS).
ENCODERS = ("mlp", "conv", "transformer")
# Regression heads (models/build.py).
HEADS = ("linear", "bounded")
# How the student reaches the teacher (models/build.py).
SAU_MODES = ("auto", "physics", "latent")
# Domain alignment losses (losses.ALIGNMENTS).
ALIGNMENTS = ("mmd", "coral", "adversarial")
# What distillation matches (losses.py).
DISTILLATIONS = ("final", "layers")
# Where a teacher starts (models/from_config.plsr_start).
TEACHER_STARTS = ("network", "plsr")
# A student's linear path (models/from_config.student_path).
STUDENT_PATHS = ("trained", "plsr")
