"""The consent fold of §6: who a person is shared with at an instant."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from kim.consent import ConsentFact, Visibility, fold, in_force

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=timezone.utc)
AGENCIES = ("job_center", "employment_agency", "youth_office")


def recorded(at: datetime, *shared: str, purposes=("placement",), valid_until: date | None = None,
             id: str | None = None) -> ConsentFact:
    return ConsentFact("urn:kim:integration_center:test", id or f"c-{at.isoformat()}-{shared}", "integration_center",
                       "recorded", at, at, tuple(shared), tuple(purposes), valid_until)


def withdrawn(at: datetime, *shared: str, source: str = "urn:kim:job_center:test") -> ConsentFact:
    return ConsentFact(source, f"w-{at.isoformat()}-{shared}", source.split(":")[2], "withdrawn", at, at,
                       tuple(shared))


def shared(facts, agency="job_center", now=T0 + timedelta(days=1)) -> bool:
    return bool(in_force(facts, agency, now))


def test_no_consent_shares_nothing():
    assert not shared([])


def test_a_consent_shares_with_the_named_agencies_from_its_time_on():
    facts = [recorded(T0, "job_center")]
    assert shared(facts, now=T0)
    assert not shared(facts, now=T0 - timedelta(microseconds=1))
    assert not shared(facts, agency="youth_office")


def test_a_later_withdrawal_naming_the_agency_ends_it_from_its_own_time_on():
    facts = [recorded(T0, "job_center", "employment_agency"), withdrawn(T0 + timedelta(hours=1), "job_center")]
    assert shared(facts, now=T0 + timedelta(minutes=59))
    assert not shared(facts, now=T0 + timedelta(hours=1))
    assert shared(facts, agency="employment_agency"), "the withdrawal named only the job center"


def test_a_withdrawal_before_the_consent_or_at_the_same_instant_does_not_end_it():
    assert shared([withdrawn(T0 - timedelta(days=1), "job_center"), recorded(T0, "job_center")])
    assert shared([withdrawn(T0, "job_center"), recorded(T0, "job_center")])


def test_consent_given_again_after_a_withdrawal_counts():
    facts = [recorded(T0, "job_center"), withdrawn(T0 + timedelta(hours=1), "job_center"),
             recorded(T0 + timedelta(hours=2), "job_center", purposes=("recognition",))]
    assert not shared(facts, now=T0 + timedelta(hours=1, minutes=30))
    assert [c.purposes for c in in_force(facts, "job_center", T0 + timedelta(hours=3))] == [("recognition",)]


def test_valid_until_is_an_inclusive_day_in_german_time():
    facts = [recorded(T0, "job_center", valid_until=date(2026, 6, 30))]
    # 2026-06-30 23:59 in Berlin (CEST, UTC+2) is still that day; midnight is the next one
    assert shared(facts, now=datetime(2026, 6, 30, 21, 59, tzinfo=timezone.utc))
    assert not shared(facts, now=datetime(2026, 6, 30, 22, 0, tzinfo=timezone.utc))


def test_visibility_gives_the_purposes_of_the_consents_in_force_once_each():
    facts = [recorded(T0, "job_center", purposes=("placement", "recognition")),
             recorded(T0 + timedelta(hours=1), "job_center", "youth_office", purposes=("recognition", "housing")),
             recorded(T0 + timedelta(hours=2), "youth_office", purposes=("youth welfare",))]
    seen = fold("integration_center", facts, "job_center", T0 + timedelta(days=1))
    assert seen == Visibility("integration_center", True, ("placement", "recognition", "housing"))
    nothing = fold("integration_center", facts, "employment_agency", T0 + timedelta(days=1))
    assert nothing == Visibility("integration_center", False, ())


def test_the_registering_agency_sees_personal_data_without_a_consent_others_only_while_shared():
    assert Visibility("integration_center", False, ()).personal_data_visible_to("integration_center")
    assert not Visibility("integration_center", False, ()).personal_data_visible_to("job_center")
    assert Visibility("integration_center", True, ("x",)).personal_data_visible_to("job_center")
    assert not Visibility(None, False, ()).personal_data_visible_to("job_center")


instants = st.integers(0, 20).map(lambda h: T0 + timedelta(hours=h))
facts_strategy = st.lists(
    st.one_of(
        st.builds(lambda at, agencies: recorded(at, *agencies), instants,
                  st.sets(st.sampled_from(AGENCIES), min_size=1).map(sorted)),
        st.builds(lambda at, agencies: withdrawn(at, *agencies), instants,
                  st.sets(st.sampled_from(AGENCIES), min_size=1).map(sorted)),
    ),
    max_size=8,
    unique_by=lambda f: f.key,
)


@settings(max_examples=200, deadline=None)
@given(facts_strategy, instants, st.randoms())
def test_the_order_in_which_consent_events_arrive_changes_nothing(facts, now, rnd):
    shuffled = list(facts)
    rnd.shuffle(shuffled)
    for agency in AGENCIES:
        assert in_force(shuffled, agency, now) == in_force(facts, agency, now)


@settings(max_examples=200, deadline=None)
@given(facts_strategy, instants)
def test_shared_exactly_when_the_latest_consent_for_the_agency_is_newer_than_every_withdrawal(facts, now):
    for agency in AGENCIES:
        past = [f for f in facts if f.time <= now and agency in f.shared_with]
        last_consent = max((f.time for f in past if f.kind == "recorded"), default=None)
        last_withdrawal = max((f.time for f in past if f.kind == "withdrawn"), default=None)
        expected = last_consent is not None and (last_withdrawal is None or last_consent >= last_withdrawal)
        assert shared(facts, agency, now) == expected
