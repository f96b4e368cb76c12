"""The subcommands of `tunegate`, one module per group; each `register`s its parsers.

`common` holds what they share: `CLIError` (message + exit code, caught once in `cli.main`) and
the `--config` / `--set` options, declared once.
"""
