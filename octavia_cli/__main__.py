"""`octavia` (the console script) and `python -m octavia_cli`."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version

from .cli import UsageError, api_url, build_parser
from .client import ApiError, Client, CliError
from .commands import COMMANDS, Detached, error_hint
from .credentials import api_key


def _user_agent() -> str:
    try:
        return f"octavia-cli/{version('octavia')}"
    except PackageNotFoundError:
        return "octavia-cli"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    command = " ".join(filter(None, (args.command, getattr(args, "subcommand", None))))  # `keys create`
    try:
        with Client(api_url(getattr(args, "api", None)), user_agent=_user_agent(), api_key=api_key()) as client:
            return COMMANDS[command](args, client)
    except UsageError as exc:
        print(f"octavia {command}: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if hint := error_hint(exc):
            print(hint, file=sys.stderr)
        return 1
    except CliError as exc:
        print(f"octavia: {exc}", file=sys.stderr)
        return 1
    except Detached:
        return 130
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
