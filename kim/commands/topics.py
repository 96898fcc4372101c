"""`kim topics`: create the topics of §5 on an existing cluster."""

from __future__ import annotations

import argparse
import sys

from kim.settings import KimSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--partitions", type=int, default=None, help="default: KIM_PARTITIONS (6)")


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.infra.kafka import KafkaLaunchError, create_topics
    from kim.topics import ALL_TOPICS

    try:
        created = create_topics(settings.bootstrap, ALL_TOPICS, args.partitions or settings.partitions,
                                settings.replication_factor)
    except KafkaLaunchError as exc:
        print(f"kim topics: {exc}", file=sys.stderr)
        return 1
    print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")
    return 0
