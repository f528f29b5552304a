"""Datasets (one reader per file, sharing ``seg.data.base``), transforms, the DataModule and the checker."""
