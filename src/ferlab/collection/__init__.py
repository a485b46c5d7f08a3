"""Analysing a whole collection: lazy inputs, a record of what is done, atomic result chunks.

- :mod:`ferlab.collection.walk`: the inputs of a folder tree, a list file or a glob, one at a time.
- :mod:`ferlab.collection.ledger`: what identifies an input (path, size, modification time, or a
  content hash) and which inputs the output already holds.
- :mod:`ferlab.collection.store`: the output's schema and its chunks (Parquet, CSV or JSONL),
  each written whole or not at all.
- :mod:`ferlab.collection.work`: the analysis of one task (photos, or a time range of a video)
  where it runs, with the model loaded once per process.
- :mod:`ferlab.collection.runner`: the driver: in this process, a pool of processes or Dask,
  resumable, with progress and a summary.

``docs/collection.md`` describes the command, the schema and the rules of resuming.
"""
