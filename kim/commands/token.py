"""`kim token`: a development token for trying the APIs by hand."""

from __future__ import annotations

import argparse

from kim.settings import KimSettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agency", required=True)
    parser.add_argument("--roles", required=True, help="comma-separated, e.g. agency_system,case_manager")
    parser.add_argument("--sub", default="dev-user")
    parser.add_argument("--ttl", type=int, default=8 * 3600, help="seconds of validity")


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.auth import issue_dev_token
    from kim.up import development_secret

    secret = settings.auth_hs256_secret or development_secret(settings)
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    print(issue_dev_token(secret, sub=args.sub, agency=args.agency, roles=roles, ttl_s=args.ttl))
    return 0
