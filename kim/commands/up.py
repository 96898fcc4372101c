"""`kim up [--demo]`."""

from __future__ import annotations

import argparse

from kim.settings import KimSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demo", action="store_true",
                        help="once everything is ready, publish the demo district (as `kim demo` with its defaults)")


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.up import up

    def publish_demo(stopping) -> None:
        from kim.demo.command import publish_district

        publish_district(settings, stopping)
        print("demo district published. Ctrl-C stops everything.", flush=True)

    return up(settings, after_ready=publish_demo if args.demo else None)
