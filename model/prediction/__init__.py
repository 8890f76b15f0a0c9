"""Prediction: tile layout and blending, the tile loop on a device, resampling, whole rasters and shards."""
