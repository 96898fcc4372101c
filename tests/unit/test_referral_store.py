"""The referral service's recomputation against its store (SQLite): a computation is
stored only for persons whose facts did not change while it ran."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

import services.referral.application as application
from contracts import InvalidEvent
from kim.messaging import ConsumedEvent
from kim.storage import Database
from services.referral.application import Referral, Scope
from services.referral.messaging import decode_fact, encode_derived
from services.referral.projections import SCHEMA, FactRow
from services.referral.rules import RulesConfig

SUBJECT = "P-STORE00001"


def row(n: int, name: str, time: str, **data: str) -> FactRow:
    return ("urn:kim:integration_center:test", f"e{n}", SUBJECT, name, "integration_center", time, time,
            orjson.dumps(data).decode())


@pytest.fixture
def referral(tmp_path: Path) -> Iterator[Referral]:
    db = Database.from_url(f"sqlite:///{tmp_path / 'referral.sqlite3'}")
    db.ensure_schema(SCHEMA)
    yield Referral(db, RulesConfig(), encode_derived)
    db.close()


def consume(referral: Referral, *rows: FactRow) -> None:
    with referral.db.transaction() as tx:
        referral.apply(tx, [ConsumedEvent("kim.integration_center.events", 0, 0, 0, None, r) for r in rows])


def gaps(referral: Referral) -> list[dict]:
    return referral.gaps("all", Scope(everything=True))


def test_facts_arriving_during_a_computation_leave_the_person_due(referral, monkeypatch):
    consume(referral, row(1, "CaseOpenedByAgency", "2026-02-01T08:00:00Z", area="labour_market", legal_domain="NONE"))
    real_compute, calls = application.compute, []

    def compute_while_a_fact_arrives(*args, **kwargs):
        if not calls:  # the consumer stores a closure while the first computation runs
            consume(referral, row(2, "CaseClosedByAgency", "2026-03-01T08:00:00Z", area="labour_market",
                                  reason="not_competent"))
        calls.append(args)
        return real_compute(*args, **kwargs)

    monkeypatch.setattr(application, "compute", compute_while_a_fact_arrives)
    assert referral.recompute_due([0]) == 1
    assert not referral.settled([0]) and gaps(referral) == []  # computed without the closure: not stored
    assert referral.recompute_due([0]) == 1
    assert referral.settled([0])
    assert [g["since"] for g in gaps(referral)] == ["2026-03-01T08:00:00Z"]
    assert referral.recompute_due([0]) == 0


def test_a_recomputation_replaces_the_rows_of_the_earlier_one(referral):
    consume(referral, row(1, "CaseOpenedByAgency", "2026-02-01T08:00:00Z", area="labour_market", legal_domain="NONE"),
            row(2, "CaseClosedByAgency", "2026-03-01T08:00:00Z", area="labour_market", reason="not_competent"))
    assert referral.recompute_due([0]) == 1
    assert [(g["since"], g["until"]) for g in gaps(referral)] == [("2026-03-01T08:00:00Z", None)]
    consume(referral, row(3, "CaseOpenedByAgency", "2026-04-01T08:00:00Z", area="labour_market", legal_domain="NONE"))
    assert referral.recompute_due([0]) == 1
    assert [(g["since"], g["until"]) for g in gaps(referral)] == [("2026-03-01T08:00:00Z", "2026-04-01T08:00:00Z")]


def test_the_decoding_process_gets_rows_of_valid_events_only():
    valid = (b'{"specversion":"1.0","id":"e1","source":"urn:kim:job_center:x","type":"de.kim.CaseOpenedByAgency.v1",'
             b'"subject":"P-1","time":"2026-02-01T08:00:00+01:00","recordedtime":"2026-02-01T08:00:00+01:00",'
             b'"datacontenttype":"application/json","data":{"area":"benefits","legal_domain":"SGB_II"}}')
    assert decode_fact(valid) == ("urn:kim:job_center:x", "e1", "P-1", "CaseOpenedByAgency", "job_center",
                                  "2026-02-01T08:00:00+01:00", "2026-02-01T08:00:00+01:00",
                                  '{"area":"benefits","legal_domain":"SGB_II"}')
    with pytest.raises(InvalidEvent):
        decode_fact(valid.replace(b'"SGB_II"', b'"SGB_99"'))
