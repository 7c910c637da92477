"""Integrations with other tools, one module per tool, each an optional extra that imports its tool itself
(``vaediag.integrations.optuna`` needs ``pip install 'vaediag[optuna]'``). Nothing here is imported by
``vaediag`` or its command line."""
