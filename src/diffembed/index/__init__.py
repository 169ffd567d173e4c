"""A crash-safe vector index over documents: ``documents`` (reading user files), ``build``
(embedding and writing, ``IndexSettings``), ``generations`` (the live generation, the writer
lock, file checksums), ``store`` (the on-disk generations, ``VectorIndex``), ``lexical`` (the
BM25 beside the vectors), ``search`` (``Searcher``, ``Hit``)."""
