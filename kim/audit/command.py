"""`kim audit replay|verify|access-log`: the auditors' commands (interfaces.md §7).

- `replay --as-of T [--known-at K] --out DIR`: every projection rebuilt from the
  beginning of the topics; writes `DIR/report.json` and `DIR/summary.txt`.
- `verify`: the hash chains on every `kim.*` topic and the live projections
  against a fresh replay; a JSON report on standard output, exit status 1 when
  anything does not hold.
- `access-log --subject S`: who read the person's data, when, why.

The district file (`KIM_RULES_FILE`) names, besides the rules, the agencies that
write to Kafka directly (`[audit] direct_agencies = ["job_center"]`) and the
case managers per agency (`[reporting.case_managers]`). The services are asked
with `KIM_AUDITOR_TOKEN`, or else a development token of the role auditor.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from datetime import datetime, timezone
from pathlib import Path

from pydantic import Field, SecretStr

from kim.service import SERVICE_PORTS
from kim.settings import KimSettings


class AuditSettings(KimSettings):
    auditor_token: SecretStr | None = Field(
        default=None, description="bearer token of an auditor for the services' APIs (KIM_AUDITOR_TOKEN); unset: a "
                                  "development token signed with KIM_AUTH_HS256_SECRET or kim up's secret")


class AuditError(RuntimeError):
    """The audit cannot run as asked; the message says why."""


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.upper())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not an RFC 3339 instant with offset, e.g. 2025-07-01T00:00:00Z")
    return moment.astimezone(timezone.utc)


def _local(name: str) -> str:
    return f"http://127.0.0.1:{SERVICE_PORTS[name]}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="audit", required=True, metavar="AUDIT")
    topics_help = "the topics to read, shell-style (default: kim.*)"

    rebuild = sub.add_parser("replay", help="rebuild every projection as of an instant into a report",
                             description="Rebuild responsibility, gaps and figures from the beginning of the topics, "
                                         "counting events effective by --as-of and recorded by --known-at.")
    rebuild.add_argument("--as-of", required=True, type=_instant, metavar="T", help="effective time, RFC 3339")
    rebuild.add_argument("--known-at", type=_instant, metavar="K",
                         help="only events recorded by then (default: all; the report names the latest one seen)")
    rebuild.add_argument("--out", required=True, type=Path, metavar="DIR", help="where report.json and summary.txt go")
    rebuild.add_argument("--topics", default="kim.*", metavar="PATTERN", help=topics_help)
    rebuild.add_argument("--workers", type=int, default=None,
                         help="processes that replay partition numbers in parallel (default: one per CPU for a "
                              "long history)")

    check = sub.add_parser("verify", help="check the hash chains and compare the live projections with a replay",
                           description="Exit status 0 when every chain is intact and the live projections equal a "
                                       "fresh replay, 1 otherwise; the JSON report goes to standard output.")
    check.add_argument("--topics", default="kim.*", metavar="PATTERN", help=topics_help)
    check.add_argument("--direct-agency", action="append", default=[], metavar="AGENCY",
                       help="an agency writing to Kafka directly, whose events may lack a chain "
                            "(besides [audit] direct_agencies of the district file)")
    check.add_argument("--no-projections", action="store_true", help="check the chains only")
    check.add_argument("--referral", default=_local("referral"), metavar="URL", help="the referral service")
    check.add_argument("--reporting", default=_local("reporting"), metavar="URL", help="the reporting service")

    log = sub.add_parser("access-log", help="who read a person's data, when and why")
    log.add_argument("--subject", required=True, help="the person's pseudonym")
    log.add_argument("--json", action="store_true", help="the entries as JSON")
    log.add_argument("--intake", default=_local("intake"), metavar="URL", help="the intake service")


def direct_agencies(path: Path | None) -> list[str]:
    """`[audit] direct_agencies` of the district file."""
    if path is None:
        return []
    from contracts import Agency

    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise AuditError(f"{path}: cannot read the district file ({error})") from None
    audit = document.get("audit", {})
    agencies = audit.get("direct_agencies", []) if isinstance(audit, dict) else None
    known = {a.value for a in Agency}
    if not isinstance(agencies, list) or not all(a in known for a in agencies):
        raise AuditError(f"{path}: audit.direct_agencies must be a list of agency ids ({', '.join(sorted(known))})")
    return agencies


def auditor_token(settings: AuditSettings) -> str:
    if settings.auditor_token is not None:
        return settings.auditor_token.get_secret_value()
    from kim.auth import issue_dev_token
    from kim.demo.command import token_secret

    return issue_dev_token(token_secret(settings), sub="kim-audit", agency="integration_center", roles=["auditor"])


def run(args: argparse.Namespace, settings: KimSettings) -> int:
    from kim.service import load_settings

    audit = load_settings(AuditSettings)
    try:
        if args.audit == "replay":
            return _replay(args, audit)
        if args.audit == "verify":
            return _verify(args, audit)
        return _access_log(args, audit)
    except AuditError as exc:
        print(f"kim audit {args.audit}: {exc}", file=sys.stderr)
        return 1


def _scope(settings: AuditSettings, as_of: datetime | None, known_at: datetime | None):
    from kim.audit.replay import Scope
    from services.referral.rules import RulesConfigError, load_rules
    from services.reporting.settings import DistrictConfigError, case_managers

    try:
        rules, staff = load_rules(settings.rules_file), case_managers(settings.rules_file)
    except (RulesConfigError, DistrictConfigError) as exc:
        raise AuditError(str(exc)) from None
    now = as_of or datetime.now(timezone.utc)
    return Scope(now=now, as_of=as_of, known_at=known_at, rules=rules, case_managers=staff)


def _replay(args: argparse.Namespace, settings: AuditSettings) -> int:
    from kim.audit.replay import ReplayError, replay, report_hash, summary
    from kim.collector import fewer_collections

    fewer_collections()
    scope = _scope(settings, args.as_of, args.known_at)
    try:
        result = replay(settings.bootstrap, scope, args.topics, workers=args.workers)
    except (ReplayError, OSError) as exc:
        raise AuditError(str(exc)) from None
    report = result.report_bytes()
    digest = report_hash(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_bytes(report)
    (args.out / "summary.txt").write_text(summary(result, digest), encoding="utf-8")
    print(f"replayed {result.partial.read:,} events of {len(result.partial.persons):,} persons as of "
          f"{args.as_of.isoformat()}; wrote {args.out / 'report.json'} (sha256 {digest}) and "
          f"{args.out / 'summary.txt'}")
    return 0


def _verify(args: argparse.Namespace, settings: AuditSettings) -> int:
    import httpx
    import orjson

    from kim.audit.replay import ReplayError
    from kim.audit.verify import Services, compare_projections, run_chains
    from kim.collector import fewer_collections

    fewer_collections()
    direct = sorted(set(direct_agencies(settings.rules_file)) | set(args.direct_agency))
    try:
        chains = run_chains(settings.bootstrap, args.topics, direct)
        found = []
        if not args.no_projections:
            auth = {"authorization": f"Bearer {auditor_token(settings)}"}
            with httpx.Client(base_url=args.referral, headers=auth, timeout=30) as referral, \
                    httpx.Client(base_url=args.reporting, headers=auth, timeout=60) as reporting:
                found = compare_projections(settings.bootstrap, args.topics, lambda: _scope(settings, None, None),
                                            Services(referral, reporting))
    except (ReplayError, OSError) as exc:
        raise AuditError(str(exc)) from None
    report = {"events_checked": chains.events_checked, "unchained": chains.unchained,
              "direct_agencies": direct, "problems": [p.to_dict() for p in chains.problems],
              "projections": "not compared" if args.no_projections else ("equal" if not found else "different"),
              "differences": found}
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 1 if chains.problems or found else 0


def _access_log(args: argparse.Namespace, settings: AuditSettings) -> int:
    import httpx
    import orjson

    from kim.audit.access_log import fetch, table

    try:
        entries = fetch(args.intake.rstrip("/"), auditor_token(settings), args.subject)
    except httpx.HTTPStatusError as exc:
        raise AuditError(f"intake answered {exc.response.status_code}: {exc.response.text[:500]}") from None
    except httpx.HTTPError as exc:
        raise AuditError(f"cannot reach intake at {args.intake}: {exc}") from None
    if args.json:
        sys.stdout.write(orjson.dumps(entries, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(table(args.subject, entries))
    return 0
