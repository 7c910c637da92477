"""Benchmarks (``make bench`` = ``python -m bench``): each ``bench/<name>.py`` module with a ``main()``.

``python -m bench`` runs every module's ``main`` in turn; ``python -m bench NAME [ARGS...]`` runs one,
passing ARGS. Modules whose name starts with ``_`` (data, helpers) are not benchmarks. Speed is measured
here and only here: tests never assert wall-clock times.
"""
