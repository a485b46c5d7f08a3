"""Hyperparameter search: Optuna for sampling, pruning and bookkeeping; Dask to place trials."""

from ferlab.search.space import SearchSpace, load_space, parse_space

__all__ = ["SearchSpace", "load_space", "parse_space"]
