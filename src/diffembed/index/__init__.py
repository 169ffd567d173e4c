"""A crash-safe vector index over documents: ``documents`` (reading user files), ``build``
(embedding and writing), ``store`` (the on-disk generations, ``VectorIndex``), ``search``
(``Searcher``, ``Hit``)."""
