"""vaediag: diagnose and steer VAE training runs from their TensorBoard logs.

The analysis layer never imports torch. Heavy modules are imported lazily, so ``import vaediag`` is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["__version__", "load", "RunSet", "VaediagError"]
# The one place the version is written: pyproject.toml reads it (dynamic), `vaediag --version` prints it.
__version__ = "0.1.0"

from vaediag.errors import VaediagError

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.logs import RunSet, load


def __getattr__(name: str) -> Any:
    if name in ("load", "RunSet"):
        from vaediag import logs

        return getattr(logs, name)
    raise AttributeError(f"module 'vaediag' has no attribute {name!r}")
