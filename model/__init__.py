"""U-Net building extraction engine.

Pure Python on torch, numpy, rasterio and shapely; it never imports qgis, so it runs and is
tested without QGIS (``python -m model ...`` from the repository root) and on GPU machines.
Imports inside this package are relative so that the same code runs as the plugin's
subpackage (``unet_buildings.model``) and as the top-level package ``model``.

Its sub-packages follow the pipeline, and each imports only those before it (and the shared
``errors``, ``progress`` and ``choices`` modules at this level):

- ``io``: rasters and their grids, label checks, files written safely, vector files, ground sizes;
- ``net``: the U-Net, the model file, device and arithmetic, input scaling, ONNX export;
- ``vectors``: masks to building polygons;
- ``evaluation``: the confusion matrix and scores, object matching, the report;
- ``training``: recipes, the start model, scenes sampled and augmented, the loop, checkpoints
  (its validation scores pixels with ``evaluation``'s confusion matrix);
- ``prediction``: tiles, the tile loop on a device, resampling, whole rasters and shards.
"""

__version__ = "0.1.0"
