"""Log ingestion: discover runs, read event files (CRC-checked), build the tidy frame, tail live runs.

    >>> import vaediag
    >>> rs = vaediag.load("logs/ear_teacher")            # doctest: +SKIP
    >>> rs.frame.query("term == 'kl' and split == 'val'")  # doctest: +SKIP

Public surface: :func:`load` -> :class:`RunSet` (``frame``, ``runs``: run id -> :class:`RunInfo`,
``warnings``), :class:`Tail` for the watchdog, :func:`discover`.
"""

from vaediag.logs.discover import discover
from vaediag.logs.reader import RunInfo, RunSet, load
from vaediag.logs.tail import Tail

__all__ = ["load", "RunSet", "RunInfo", "Tail", "discover"]
