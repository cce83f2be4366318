"""CLI subcommands of `sopo`, one module each, each exposing `register(subparsers)`."""
