"""District rules file of the referral service (services.referral.rules)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from services.referral.rules import IsoDuration, RulesConfig, RulesConfigError, end_of_month, load_rules


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(timezone.utc)


def test_no_file_and_empty_file_mean_all_defaults() -> None:
    for rules in (load_rules(None), RulesConfig.from_toml(""), RulesConfig.from_toml("[rules]\n")):
        assert rules == RulesConfig()
    rules = RulesConfig()
    assert (rules.r1.enabled, rules.r1.categories, rules.r1.to_agency, rules.r1.to_legal_domain,
            rules.r1.legal_end) == (True, frozenset({"protection"}), "job_center", "SGB_II", "end_of_month")
    assert (rules.r2.enabled, rules.r2.min_level, rules.r2.deadline.text) == (True, "B1", "P20D")
    assert (rules.r3.enabled, rules.r3.after.text) == (True, "P2Y")


def test_missing_keys_keep_their_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        '[rules.r1]\ncategories = ["protection", "humanitarian"]\nto_agency = "social_welfare_office"\n'
        'to_legal_domain = "SGB_XII"\nlegal_end = "P1M"\n'
        '[rules.r2]\nmin_level = "B2"\n[rules.r3]\nenabled = false\n'
        '[gateway]\ndirect_writers = ["job_center"]\n',  # other parts of a district's configuration
        encoding="utf-8",
    )

    rules = load_rules(path)

    assert rules.r1.categories == {"protection", "humanitarian"}
    assert (rules.r1.to_agency, rules.r1.to_legal_domain) == ("social_welfare_office", "SGB_XII")
    assert rules.r1.legal_end == IsoDuration.parse("P1M") and rules.r1.enabled
    assert (rules.r2.min_level, rules.r2.deadline.text, rules.r2.enabled) == ("B2", "P20D", True)
    assert (rules.r3.enabled, rules.r3.after.text) == (False, "P2Y")


@pytest.mark.parametrize(("toml", "message"), [
    ('[rules.r2]\ndeadline = "twenty days"\n',
     "rules.r2.deadline: 'twenty days' is not an ISO 8601 duration such as P20D"),
    ("[rules.r2]\ndeadline = 20\n", "rules.r2.deadline: 20 is not an ISO 8601 duration such as P20D"),
    ('[rules.r3]\nafter = "P0D"\n', "rules.r3.after: 'P0D' is not an ISO 8601 duration such as P20D"),
    ('[rules.r2]\ndedline = "P20D"\n', "rules.r2.dedline: unknown key (known: deadline, enabled, min_level)"),
    ('[rules.r4]\nenabled = true\n', "rules.r4: unknown rule (known: r1, r2, r3)"),
    ('[rules.r1]\nenabled = "yes"\n', "rules.r1.enabled: 'yes' is not true or false"),
    ('[rules.r2]\nmin_level = "B3"\n', "rules.r2.min_level: 'B3' is not a CEFR level (A1 A2 B1 B2 C1 C2)"),
    ('[rules.r1]\ncategories = ["refugee"]\n', "rules.r1.categories: 'refugee' is not a residence title category"),
    ('[rules.r1]\ncategories = "protection"\n', "rules.r1.categories: 'protection' is not a list"),
    ('[rules.r1]\nto_agency = "youth_office"\n',
     "rules.r1.to_agency: 'youth_office' in 'SGB_II' cannot take benefits after AsylbLG"),
    ('[rules.r1]\nlegal_end = "end of month"\n',
     "rules.r1.legal_end: 'end of month' is neither \"end_of_month\" nor an ISO 8601 duration such as P1M"),
    ('[rules.r1]\nlegal_end = "P1X"\n', "rules.r1.legal_end: 'P1X' is not an ISO 8601 duration such as P20D"),
    ("rules = 3\n", "rules: must be a table"),
    ("[rules]\nr1 = 3\n", "rules.r1: must be a table [rules.r1]"),
    ("[rules.r1\n", "rules file is not valid TOML"),
])
def test_errors_name_the_rule_and_the_key(toml: str, message: str) -> None:
    with pytest.raises(RulesConfigError) as error:
        RulesConfig.from_toml(toml)
    assert str(error.value).startswith(message)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(RulesConfigError, match="missing.toml: cannot read rules file"):
        load_rules(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[rules.r3]\nafter = "two years"\n', encoding="utf-8")
    with pytest.raises(RulesConfigError, match=r"bad.toml: rules.r3.after: 'two years' is not an ISO 8601"):
        load_rules(bad)


@pytest.mark.parametrize(("text", "start", "end"), [
    ("P20D", "2026-12-15T15:00:00Z", "2027-01-04T15:00:00Z"),
    ("PT30S", "2026-12-31T23:59:45Z", "2027-01-01T00:00:15Z"),
    ("PT0.5S", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00.500000Z"),
    ("P2Y", "2026-06-01T10:00:00Z", "2028-06-01T10:00:00Z"),
    ("P2Y", "2028-02-29T10:00:00Z", "2030-02-28T10:00:00Z"),
    ("P1M", "2026-01-31T10:00:00Z", "2026-02-28T10:00:00Z"),
    ("P1M", "2026-12-15T00:00:00Z", "2027-01-15T00:00:00Z"),
    ("P1Y2M3DT4H5M6S", "2026-01-01T00:00:00Z", "2027-03-04T04:05:06Z"),
    ("P2W", "2026-03-25T12:00:00Z", "2026-04-08T12:00:00Z"),
    ("PT36H", "2026-03-28T12:00:00Z", "2026-03-30T00:00:00Z"),
])
def test_durations_add_calendar_units_calendar_correctly(text: str, start: str, end: str) -> None:
    assert IsoDuration.parse(text).after(utc(start)) == utc(end)


@pytest.mark.parametrize("text", ["", "P", "PT", "P1DT", "20D", "P-1D", "P1.5D", "p20d", "P1W2D", "P20D ", "PT1S2M"])
def test_durations_are_parsed_strictly(text: str) -> None:
    with pytest.raises(ValueError):
        IsoDuration.parse(text)


@pytest.mark.parametrize(("instant", "end"), [
    ("2026-07-02T08:00:00Z", "2026-07-31T22:00:00Z"),
    ("2026-12-15T10:00:00Z", "2026-12-31T23:00:00Z"),
    ("2026-12-31T23:30:00Z", "2027-01-31T23:00:00Z"),  # already January in Berlin
    ("2026-03-10T10:00:00Z", "2026-03-31T22:00:00Z"),
    ("2026-10-10T10:00:00Z", "2026-10-31T23:00:00Z"),
    ("2026-02-01T00:00:00+01:00", "2026-02-28T23:00:00Z"),
])
def test_end_of_month_is_the_next_month_in_berlin(instant: str, end: str) -> None:
    assert end_of_month(utc(instant)) == utc(end)
