"""Vectorization: masks to building polygons, merged across windows, filtered and simplified."""
