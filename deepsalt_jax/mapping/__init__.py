"""Salinity maps of whole scenes with a trained model (--mode=map).

`map_scene` maps one scene, `map_scenes` a file, folder or list of them and
the region (mosaic, region report); `options.defaults()` are the map's
options. The parts: mapper (per scene), model (validation's choice or the
student), options, scenes (which scenes, which process maps which), blocks
(rows read ahead, written behind), stats, files (COGs, report), quicklook,
mosaic, covariate_rasters.
"""
from deepsalt_jax.mapping import options
from deepsalt_jax.mapping.mapper import map_scene
from deepsalt_jax.mapping.mapper import map_scenes
