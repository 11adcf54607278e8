"""One module per `pt2e-int8` subcommand, each with `run(args) -> exit status`.

`pt2e_int8.app.cli` imports only the one it dispatches to, so `bench` never pays for (or needs)
the export machinery.
"""
