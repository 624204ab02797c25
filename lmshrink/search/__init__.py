"""Searches over removal sets that measure as they go: the pairwise surrogate model and the search that uses it."""
