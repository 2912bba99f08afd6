"""The one exception that reaches the CLI: a usage error, printed as one line, exit 2."""


class UsageError(Exception):
    pass
