"""Integrations with the frameworks users train in: each module imports its framework (and torch) itself.

Nothing here is imported by ``vaediag`` or its CLI: ``import vaediag.integrations.lightning`` is the user's
choice, and brings Lightning and torch with it. The analysis layer stays torch-free.
"""
