"""Shared, non-model code of the UNIFY / T-MASS video-text retrieval package.

Submodules (`data`, `metrics`, `optim`, `training`, ...) are imported explicitly by their users;
nothing heavy is imported here.
"""

__version__ = "0.1.0"
