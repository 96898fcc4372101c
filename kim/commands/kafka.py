"""`kim kafka start|stop|status`."""

from __future__ import annotations

import argparse
import sys

from kim.settings import KimSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status"])


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim import up as stack
    from kim.infra.kafka import KafkaLaunchError

    action = {"start": stack.kafka_start, "stop": stack.kafka_stop, "status": stack.kafka_status}[args.action]
    try:
        return action(settings)
    except KafkaLaunchError as exc:
        print(f"kim kafka {args.action}: {exc}", file=sys.stderr)
        return 1
