"""One module per subcommand: ``add_parser(subparsers, *, name, help)`` and a handler set on ``args``.

These modules (with ``vaediag.cli``) are the CLI boundary: they print and choose exit codes.
"""
