"""What every layer of ferlab uses: the one atomic writer (:mod:`.files`), array files (:mod:`.arrays`), when progress bars are drawn (:mod:`.progress`), which extra installs a library (:mod:`.extras`) and PNG plots (:mod:`.plots`).

The package imports none of its modules, so each is imported on its own (and sits in its own
layer: see tests/test_layering.py)."""
