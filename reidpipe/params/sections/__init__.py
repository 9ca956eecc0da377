"""The sections of the parameters, one module per group of top-level keys; ``reidpipe.params``
re-exports the classes and ``reidpipe/params/schema.py`` assembles them into ``Params``."""
