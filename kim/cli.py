"""The `kim` console script (§7 of the interface specification).

Each command lives in its own module with `add_arguments(parser)` and
`run(args, settings) -> exit status`. Command modules keep their heavy imports
inside `run`, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kim.service import load_settings
from kim.settings import KimSettings

# command → (module, help)
COMMANDS = {
    "up": ("kim.commands.up", "start the broker (unless KIM_KAFKA_BOOTSTRAP is set), the topics and every "
                              "service; Ctrl-C stops everything"),
    "demo": ("kim.demo.command", "publish a realistic synthetic district through the gateway"),
    "kafka": ("kim.commands.kafka", "the built-in Kafka broker alone: start, stop, status"),
    "topics": ("kim.commands.topics", "create the kim.* topics on KIM_KAFKA_BOOTSTRAP"),
    "token": ("kim.commands.token", "print a development token (KIM_AUTH_HS256_SECRET or kim up's own)"),
    "bench": ("kim.bench", "benchmarks that print numbers"),
    "audit": ("kim.audit.command", "auditors: replay the history, verify the hash chains, read the access log"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kim", description="KIM event exchange: run, demo, audit, benchmark")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module)
        _module(module).add_arguments(command)
    return parser


def _module(name: str):
    return importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(KimSettings)
    return _module(args.module).run(args, settings)


if __name__ == "__main__":
    sys.exit(main())
