"""Evaluation: the confusion matrix and scores, object matching, the comparison of rasters, the report."""
