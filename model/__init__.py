"""U-Net building extraction engine.

Pure Python on torch, numpy, rasterio and shapely; it never imports qgis, so it runs and is
tested without QGIS (``python -m model ...`` from the repository root) and on GPU machines.
Imports inside this package are relative so that the same code runs as the plugin's
subpackage (``unet_buildings.model``) and as the top-level package ``model``.
"""

__version__ = "0.1.0"
