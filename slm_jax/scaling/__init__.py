"""Scaling studies: compute accounting, sweep expansion and collection, Chinchilla-style fits, plots."""
