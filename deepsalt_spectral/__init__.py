"""The bottom layer: sensors, spectral resampling, band matching, indices.

Imports nothing of the project, so data preparation, training and mapping
all build on the same spectral facts.
"""
