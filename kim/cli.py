"""The `kim` console script (§7 of the interface specification)."""

from __future__ import annotations

import argparse
import sys

from kim.service import load_settings
from kim.settings import KimSettings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kim", description="KIM event exchange: run, demo, audit, benchmark")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("up", help="start the broker (unless KIM_KAFKA_BOOTSTRAP is set), the topics and every "
                              "service; Ctrl-C stops everything")

    kafka = sub.add_parser("kafka", help="the built-in Kafka broker alone")
    kafka.add_argument("action", choices=["start", "stop", "status"])

    topics = sub.add_parser("topics", help="create the kim.* topics on KIM_KAFKA_BOOTSTRAP")
    topics.add_argument("--partitions", type=int, default=None, help="default: KIM_PARTITIONS (6)")
    token = sub.add_parser("token", help="print a development token (KIM_AUTH_HS256_SECRET or kim up's own)")
    token.add_argument("--agency", required=True)
    token.add_argument("--roles", required=True, help="comma-separated, e.g. agency_system,case_manager")
    token.add_argument("--sub", default="dev-user")
    token.add_argument("--ttl", type=int, default=8 * 3600, help="seconds of validity")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = load_settings(KimSettings)
    from kim.infra.kafka import KafkaLaunchError

    try:
        if args.command == "up":
            from kim.up import up

            return up(settings)
        if args.command == "kafka":
            from kim import up as stack

            return {"start": stack.kafka_start, "stop": stack.kafka_stop, "status": stack.kafka_status}[
                args.action](settings)
        if args.command == "topics":
            from kim.infra.kafka import create_topics
            from kim.topics import ALL_TOPICS

            partitions = args.partitions or settings.partitions
            created = create_topics(settings.bootstrap, ALL_TOPICS, partitions, settings.replication_factor)
            print(f"created {len(created)} topics: {', '.join(created) or '(all existed)'}")
            return 0
        if args.command == "token":
            from kim.auth import issue_dev_token
            from kim.up import development_secret

            secret = settings.auth_hs256_secret or development_secret(settings)
            print(issue_dev_token(secret, sub=args.sub, agency=args.agency,
                                  roles=[r.strip() for r in args.roles.split(",") if r.strip()], ttl_s=args.ttl))
            return 0
    except KafkaLaunchError as exc:
        print(f"kim: {exc}", file=sys.stderr)
        return 1
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
