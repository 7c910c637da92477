"""Benchmarks (``make bench`` = ``python -m bench``): each ``bench/<name>.py`` module with a ``main()``.

Minimal runner created by the log-ingestion work; the generic runner may replace it.
"""
