"""Reading and writing: rasters and their grids, label checks, files written safely, vectors, ground sizes."""
