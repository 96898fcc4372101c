"""A realistic synthetic district: every person's path through the agencies, as events.

The district is Landkreis Biberach at the size and with the outcomes the glossary
reports for one year (about 1,300 refugees cared for; 240 into employment, 315
internships, 28 apprenticeships). Each person follows a plausible path: registered,
profiled and consenting; AsylbLG benefits at the Sozialamt, KIM case management and
labour-market counselling at the integration center; a residence title and the
handover of benefits to the Jobcenter at the end of that month (rule R1), with a few
handovers late, forgotten or rejected; German B1 and the handover of the labour
market (rule R2); measures, internships, jobs; closures and moves.

Everything is drawn from per-person random generators seeded by the seed, the start
and the length, so the same arguments give the same events with the same ids, and a
smaller district is a prefix of a larger one (re-publishing gives duplicates only).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, Sequence, TypeVar
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc

DEFAULT_END = date(2026, 1, 1)
"""Without an explicit start the district's history ends here, so that every deadline
of the demo (legal ends, R2 deadlines, two-year reviews) has passed when it runs."""

DISTRICT = "Landkreis Biberach"

IC = "integration_center"
JC = "job_center"
EA = "employment_agency"
FO = "foreigners_office"
YO = "youth_office"
SO = "social_welfare_office"

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

T = TypeVar("T")

# Municipality, weight (roughly the refugees living there), office of the agencies
# that have one in several towns (integration center, Jobcenter).
MUNICIPALITIES: tuple[tuple[str, int, str], ...] = (
    ("Biberach an der Riß", 30, "biberach"),
    ("Laupheim", 18, "laupheim"),
    ("Riedlingen", 9, "riedlingen"),
    ("Ochsenhausen", 8, "biberach"),
    ("Bad Schussenried", 8, "biberach"),
    ("Schwendi", 6, "laupheim"),
    ("Bad Buchau", 5, "riedlingen"),
    ("Erolzheim", 4, "biberach"),
    ("Mittelbiberach", 4, "biberach"),
    ("Burgrieden", 3, "laupheim"),
    ("Uttenweiler", 3, "riedlingen"),
    ("Ertingen", 2, "riedlingen"),
)

# Country of origin, weight, mother tongue (ISO 639-1).
COUNTRIES: tuple[tuple[str, int, str], ...] = (
    ("SY", 28, "ar"), ("AF", 17, "fa"), ("UA", 12, "uk"), ("TR", 11, "tr"), ("IQ", 8, "ar"),
    ("IR", 5, "fa"), ("ER", 5, "ti"), ("SO", 4, "so"), ("NG", 3, "en"), ("GE", 3, "ka"),
    ("RU", 2, "ru"), ("PK", 2, "ur"),
)

TITLES: dict[str, tuple[tuple[str, int | None], ...]] = {
    # category: (legal basis, validity in months or None for unlimited)
    "protection": (("§ 25 Abs. 2 AufenthG", 36), ("§ 25 Abs. 1 AufenthG", 36)),
    "humanitarian": (("§ 25 Abs. 5 AufenthG", 12), ("§ 25 Abs. 4 AufenthG", 6)),
    "toleration": (("§ 60a Abs. 2 AufenthG", 6), ("§ 60c AufenthG", 24)),
    "opportunity": (("§ 104c AufenthG", 18),),
    "family": (("§ 36a AufenthG", 36),),
    "employment": (("§ 19d AufenthG", 24),),
    "other": (("§ 26 Abs. 3 AufenthG", None),),
}
TITLE_CATEGORIES: tuple[tuple[str, int], ...] = (
    ("protection", 72), ("humanitarian", 9), ("toleration", 7), ("opportunity", 5), ("family", 4),
    ("employment", 3),
)

PROVIDERS: dict[str, tuple[str, ...]] = {
    "integration_course": ("Volkshochschule Biberach", "Volkshochschule Laupheim", "Volkshochschule Riedlingen",
                           "Internationaler Bund Biberach"),
    "language_course": ("Volkshochschule Biberach", "Kolping Bildungswerk Biberach", "Internationaler Bund Biberach"),
    "school_course": ("Berufsschule Biberach (VABO)", "Berufsschule Laupheim (VABO)"),
    "internship": ("care home (internship)", "metalworking firm (internship)", "retail (internship)",
                   "restaurant kitchen (internship)", "logistics centre (internship)", "car workshop (internship)"),
    "fim": ("Landratsamt Biberach, shared accommodation", "Stadt Biberach, Bauhof"),
    "work_opportunity": ("Caritas Biberach-Saulgau", "Diakonie Biberach", "Stadt Laupheim, Bauhof"),
    "recognition_counselling": ("IQ Netzwerk Baden-Württemberg",),
    "psychosocial_counselling": ("Psychosoziales Zentrum für Geflüchtete Ulm",),
    "other": ("application training, Internationaler Bund Biberach", "job coaching, Caritas Biberach-Saulgau"),
}

VOCATIONS = ("electrician", "car mechanic", "tailor", "carpenter", "cook", "hairdresser", "welder", "baker",
             "nurse", "bricklayer")
ACADEMIC_FIELDS = ("civil engineering", "medicine", "teaching", "business administration", "computer science",
                   "pharmacy", "law")
INCLINATIONS = ("technical trades", "care work", "logistics", "gastronomy", "retail", "construction",
                "agriculture", "IT", "cleaning services", "metalworking", "childcare", "driving")
SUPPORT_NEEDS = ("childcare", "housing", "health", "psychosocial support", "debt counselling", "mobility",
                 "literacy")
REJECTIONS = {
    "benefits": ("no application for SGB II benefits received yet", "person lives outside our district",
                 "residence title not yet presented"),
    "labour_market": ("person not registered as a job seeker", "responsibility lies with another office"),
}
CEFR = ("A1", "A2", "B1", "B2", "C1", "C2")


# --- time helpers (arithmetic in UTC, office hours in Berlin) ----------------------------


def _local(day: date, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def _day(instant: datetime) -> date:
    return instant.astimezone(BERLIN).date()


def _add_months(day: date, months: int) -> date:
    """The same day `months` later (or earlier), clamped to the length of that month."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    for last in (day.day, 30, 29, 28):
        try:
            return date(year, month + 1, min(day.day, last))
        except ValueError:
            continue
    raise AssertionError(day)


def _end_of_month(instant: datetime) -> datetime:
    """The first instant of the next month in Berlin: the legal end of R1."""
    return _local(_add_months(_day(instant).replace(day=1), 1))


def _workday(day: date) -> date:
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return day


def _iso(instant: datetime) -> str:
    # Agencies' systems write local time with its offset, as the spec's examples do.
    return instant.astimezone(BERLIN).isoformat(timespec="seconds")


def _pseudonym(rng: random.Random) -> str:
    bits = rng.getrandbits(50)
    return "P-" + "".join(_CROCKFORD[(bits >> shift) & 31] for shift in range(45, -1, -5))


def _weighted(rng: random.Random, options: Sequence[tuple[T, int]]) -> T:
    return rng.choices([value for value, _ in options], [weight for _, weight in options])[0]


# --- one person ----------------------------------------------------------------------------


@dataclass
class _Draft:
    """An event before it has its id: who emits what, when it took effect and was recorded."""

    agency: str
    name: str
    time: datetime
    recorded: datetime
    data: dict[str, Any]


NEW, BACKLOG, SGB2, MINOR = "new", "backlog", "sgb2", "minor"
COHORTS: tuple[tuple[str, int], ...] = ((NEW, 55), (BACKLOG, 18), (SGB2, 20), (MINOR, 7))
"""New arrivals; persons in a long asylum procedure and persons already under SGB II,
both taken over as the existing caseload in the first weeks; unaccompanied minors."""

# Chances per person and year, by cohort, calibrated to the glossary's outcomes.
EMPLOYMENT_RATE = {NEW: 0.18, BACKLOG: 0.22, SGB2: 0.33, MINOR: 0.0}
INTERNSHIP_RATE = {NEW: 0.27, BACKLOG: 0.29, SGB2: 0.25, MINOR: 0.34}
APPRENTICESHIP_RATE = {"minor": 0.17, "young": 0.05, "older": 0.006}


class _Person:
    """One person's path, drawn from the person's own random generator."""

    # Set while the path is built (register, agreement).
    shared: list[str]
    profile_at: datetime
    agreed_at: datetime
    english: str | None
    qualifications: list[dict[str, str]]
    experience: int
    inclinations: list[str]
    needs: list[str]
    plan_id: str
    goals: dict[str, str]

    def __init__(self, rng: random.Random, start: date, end: datetime, years: float) -> None:
        self.rng, self.start, self.end, self.years = rng, start, end, years
        self.drafts: list[_Draft] = []
        # Handover chains and gaps under way: (area, trigger, when settled or None for never).
        self.chains: list[tuple[str, datetime, datetime | None]] = []
        self.handover_areas: dict[str, str] = {}
        self.accepted: list[tuple[str, str, datetime]] = []  # (area, receiver, effective)
        self.german: list[tuple[datetime, int]] = []  # (when, index into CEFR; -1 for none)
        self.recognition: list[tuple[datetime, int, str]] = []  # (when, qualification, status)
        self.naturalised: datetime | None = None
        self.regular_services: datetime | None = None
        self.counter = 0

        self.subject = _pseudonym(rng)
        self.tag = self.subject[2:]
        self.cohort = _weighted(rng, COHORTS)
        self.municipality, office = _weighted(rng, [((m, o), w) for m, w, o in MUNICIPALITIES])
        self.offices = {IC: office, JC: office, EA: "biberach", SO: "biberach", YO: "biberach",
                        FO: "laupheim" if self.municipality == "Laupheim" else "biberach"}
        self.country, self.mother_tongue = _weighted(rng, [((c, lang), w) for c, w, lang in COUNTRIES])
        span = (_day(end) - start).days
        if self.cohort in (BACKLOG, SGB2):
            reg_day = start + timedelta(days=rng.randrange(min(56, span)))
        else:
            reg_day = start + timedelta(days=rng.randrange(span))
        if _workday(reg_day) >= _day(end):  # a weekend at the very end: the Friday before
            reg_day -= timedelta(days=reg_day.weekday() - 4)
        self.registered = self.office_time(reg_day)
        before = {NEW: (5, 60), MINOR: (3, 30), BACKLOG: (120, 700), SGB2: (400, 3300)}[self.cohort]
        self.arrival = reg_day - timedelta(days=rng.randint(*before))
        if self.cohort == MINOR:
            self.birth_year = reg_day.year - rng.randint(14, 17)
        else:
            low, high = _weighted(rng, [((18, 27), 35), ((28, 45), 45), ((46, 59), 14), ((60, 75), 6)])
            self.birth_year = reg_day.year - rng.randint(low, high)
        self.registrar = JC if self.cohort == SGB2 and rng.random() < 0.6 else IC

    # -- emitting -------------------------------------------------------------------------

    def emit(self, agency: str, name: str, at: datetime, data: dict[str, Any],
             recorded: datetime | None = None) -> _Draft:
        draft = _Draft(agency, name, at, recorded if recorded is not None else self.recorded(at), data)
        self.drafts.append(draft)
        return draft

    def recorded(self, at: datetime) -> datetime:
        rng, r = self.rng, self.rng.random()
        if r < 0.55:
            minutes = rng.randint(1, 90)
        elif r < 0.85:
            minutes = rng.randint(120, 3 * 1440)
        elif r < 0.965:
            minutes = rng.randint(3 * 1440, 14 * 1440)
        else:  # recorded weeks late: arrives late and out of order
            minutes = rng.randint(21 * 1440, 70 * 1440)
        return at + timedelta(minutes=minutes)

    def new_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.tag}-{self.counter}"

    # -- time ---------------------------------------------------------------------------------

    def office_time(self, day: date) -> datetime:
        minute = self.rng.randrange(8 * 60, 16 * 60 + 30)
        return _local(_workday(day), minute // 60, minute % 60)

    def office_after(self, instant: datetime, min_days: int, max_days: int) -> datetime:
        """An office-hours instant some days after `instant`, always later than it."""
        candidate = self.office_time(_day(instant) + timedelta(days=self.rng.randint(min_days, max_days)))
        return candidate if candidate > instant else instant + timedelta(minutes=self.rng.randint(5, 90))

    def between(self, low: datetime, high: datetime) -> datetime | None:
        """An instant strictly between `low` and `high`, in office hours when there are any."""
        if high <= low:
            return None
        for _ in range(4):
            days = (_day(high) - _day(low)).days
            candidate = self.office_time(_day(low) + timedelta(days=self.rng.randint(0, days)))
            if low < candidate < high:
                return candidate
        return low + (high - low) * self.rng.uniform(0.1, 0.9)

    # -- the responsibility each event implies, replayed from this person's events ------------------

    def holder(self, area: str, at: datetime) -> tuple[str, str] | None:
        """(agency, legal domain) holding `area` at `at`, by the events so far (effective time)."""
        current: tuple[str, str] | None = None
        offers: dict[str, tuple[str, str]] = {}
        for draft in sorted(self.drafts, key=lambda d: d.time):
            if draft.time > at:
                break
            data = draft.data
            if draft.name == "CaseOpenedByAgency" and data["area"] == area:
                current = (draft.agency, data["legal_domain"])
            elif draft.name == "HandedOverToAgency" and data["area"] == area:
                offers[data["handover_id"]] = (data["to_agency"], data["to_legal_domain"])
            elif draft.name == "HandoverAccepted" and data["handover_id"] in offers:
                current = offers[data["handover_id"]]
            elif draft.name == "CaseClosedByAgency" and data["area"] == area:
                current = None
        return current

    def settled(self, area: str) -> datetime | None:
        """When everything under way in `area` is over; None while a chain never ends."""
        latest = self.registered
        for draft in self.drafts:
            if draft.data.get("area") == area or self.handover_areas.get(draft.data.get("handover_id", "")) == area:
                latest = max(latest, draft.time)
        for chain_area, _, until in self.chains:
            if chain_area == area:
                if until is None:
                    return None
                latest = max(latest, until)
        return latest

    def german_at(self, at: datetime) -> int:
        return max((level for when, level in self.german if when <= at), default=-1)

    # -- the path -------------------------------------------------------------------------------

    def build(self) -> list[_Draft]:
        self.register()
        self.residence()
        if self.agreed_at > self.end:
            return self.drafts  # registered in the last weeks: no plan yet
        self.language()
        self.measures()
        self.work()
        self.not_competent()
        self.consent_changes()
        self.youth_ends()
        self.reassessments()
        self.leave()
        return self.drafts

    def register(self) -> None:
        rng, reg, agency = self.rng, self.registered, self.registrar
        self.emit(agency, "PersonRegistered", reg, {
            "municipality": self.municipality, "birth_year": self.birth_year,
            "arrival_date": self.arrival.isoformat(), "country_of_origin": self.country})
        if agency == IC:
            self.shared = [JC, EA, SO, FO] + ([YO] if self.cohort == MINOR else [])
        else:
            self.shared = [IC, EA]
        purposes = ["case management across legal domains", "labour market integration"]
        self.emit(agency, "ConsentRecorded", reg + timedelta(minutes=rng.randint(5, 40)), {
            "shared_with": list(self.shared), "purposes": purposes,
            "valid_until": _add_months(_day(reg), 24).isoformat() if rng.random() < 0.8 else None})

        # The existing caseload is taken over with the dates on file: case management (and
        # the Jobcenter's responsibility) began long before, recorded now.
        opened = reg + timedelta(minutes=rng.randint(41, 60))
        since = case_since = opened
        if self.cohort == SGB2:
            since = _local(_add_months(self.arrival.replace(day=1), rng.randint(4, 12)))
        if self.cohort in (BACKLOG, SGB2):
            earliest = since if self.cohort == SGB2 else _local(self.arrival + timedelta(days=14))
            case_since = max(earliest, reg - timedelta(days=rng.randint(30, 540)))
        migrated = opened + timedelta(minutes=rng.randint(1, 30))
        self.emit(agency, "CaseOpenedByAgency", case_since,
                  {"area": "case_management", "legal_domain": "NONE" if agency == IC else "SGB_II"},
                  recorded=opened if case_since == opened else migrated)
        arrived = _local(self.arrival)
        if self.cohort in (NEW, BACKLOG):
            self.emit(SO, "CaseOpenedByAgency", arrived, {"area": "benefits", "legal_domain": "ASYLBLG"})
        if self.cohort == MINOR:
            self.emit(YO, "CaseOpenedByAgency", arrived, {"area": "youth", "legal_domain": "SGB_VIII"})
        if self.cohort == SGB2:
            self.emit(JC, "CaseOpenedByAgency", since, {"area": "benefits", "legal_domain": "SGB_II"},
                      recorded=migrated)
            self.emit(JC, "CaseOpenedByAgency", since, {"area": "labour_market", "legal_domain": "SGB_II"},
                      recorded=migrated)
        else:
            self.emit(IC, "CaseOpenedByAgency", opened + timedelta(minutes=2),
                      {"area": "labour_market", "legal_domain": "NONE"})

        self.profile_at = self.office_after(reg, 3, 28)
        start_level = {NEW: [(-1, 30), (0, 50), (1, 20)], MINOR: [(-1, 30), (0, 50), (1, 20)],
                       BACKLOG: [(0, 30), (1, 50), (2, 20)], SGB2: [(1, 40), (2, 45), (3, 15)]}[self.cohort]
        self.german.append((self.profile_at, _weighted(rng, start_level)))
        self.english = rng.choice((None, None, "A2", "B1", "B2")) if self.mother_tongue != "en" else None
        self.qualifications = self.draw_qualifications()
        self.experience = 0 if self.cohort == MINOR else rng.randint(0, 20)
        self.inclinations = rng.sample(INCLINATIONS, rng.randint(1, 3))
        self.needs = rng.sample(SUPPORT_NEEDS, rng.choice((0, 1, 1, 2)))
        self.agreed_at = self.office_after(self.profile_at, 2, 21)
        if self.profile_at <= self.end:
            self.emit(agency, "ProfileCompleted", self.profile_at, self.profile(self.profile_at))
        if self.agreed_at <= self.end:
            self.agreement()

    def draw_qualifications(self) -> list[dict[str, str]]:
        rng = self.rng
        kind = "school" if self.cohort == MINOR else _weighted(
            rng, [("none", 30), ("school", 25), ("vocational", 30), ("academic", 15)])
        if kind == "none":
            return []
        field_ = {"school": "secondary school", "vocational": rng.choice(VOCATIONS),
                  "academic": rng.choice(ACADEMIC_FIELDS)}[kind]
        recognition = "not_started" if kind == "school" else _weighted(rng, [("not_started", 70), ("in_progress", 30)])
        self.recognition.append((self.registered, 0, recognition))
        return [{"kind": kind, "field": field_, "country": self.country, "recognition": recognition}]

    def profile(self, at: datetime) -> dict[str, Any]:
        levels = {self.mother_tongue: "C2"}
        german = self.german_at(at)
        if german >= 0:
            levels["de"] = CEFR[german]
        if self.english:
            levels["en"] = self.english
        qualifications = []
        for index, qualification in enumerate(self.qualifications):
            known = [(when, status) for when, i, status in self.recognition if i == index and when <= at]
            qualifications.append({**qualification, "recognition": max(known)[1] if known else "not_started"})
        return {"language_levels": levels, "qualifications": qualifications,
                "work_experience_years": self.experience, "inclinations": list(self.inclinations),
                "support_needs": list(self.needs)}

    def agreement(self) -> None:
        rng = self.rng
        day = _day(self.agreed_at)
        goals: list[tuple[str, str, date]] = []
        if self.german_at(self.agreed_at) < 2:
            goals.append(("language", "German B1 (DTZ)", day + timedelta(days=rng.randint(270, 365))))
        if self.cohort == MINOR or self.birth_year >= day.year - 25:
            goals.append(("training", "apprenticeship", day + timedelta(days=rng.randint(300, 700))))
        if self.cohort != MINOR:
            goals.append(("employment", "employment subject to social insurance",
                          day + timedelta(days=rng.randint(365, 730))))
        for qualification in self.qualifications:
            if qualification["kind"] in ("vocational", "academic"):
                goals.append(("recognition", f"recognition as {qualification['field']}",
                              day + timedelta(days=rng.randint(180, 400))))
        for kind, target, chance in (("housing", "own flat (follow-up housing)", 0.3),
                                     ("social", "member of a local club or volunteering", 0.15),
                                     ("health", "stabilised with psychosocial support", 0.08)):
            if rng.random() < chance:
                goals.append((kind, target, day + timedelta(days=rng.randint(120, 365))))
        self.plan_id = f"plan-{self.tag}-1"
        self.goals = {kind: f"g{n}" for n, (kind, _, _) in enumerate(goals, 1)}
        self.emit(self.registrar, "IntegrationAgreementSigned", self.agreed_at, {
            "plan_id": self.plan_id,
            "goals": [{"goal_id": f"g{n}", "kind": kind, "target": target, "due": due.isoformat()}
                      for n, (kind, target, due) in enumerate(goals, 1)]})
        for kind in ("housing", "social"):
            if kind in self.goals and rng.random() < 0.45:
                self.goal_achieved(kind, self.office_after(self.agreed_at, 30, 300))

    def goal_achieved(self, kind: str, at: datetime) -> None:
        if kind in self.goals and at <= self.end:
            self.emit(self.registrar, "GoalAchieved", at, {"plan_id": self.plan_id, "goal_id": self.goals.pop(kind)})

    # -- residence and benefits (rule R1) ---------------------------------------------------------

    def residence(self) -> None:
        rng = self.rng
        if self.cohort == SGB2:
            self.long_term_residence()
            return
        if rng.random() >= 0.88:
            return  # asylum procedure still running
        if self.cohort == BACKLOG:
            at = self.office_after(self.registered, 5, 240)
        else:
            at = max(self.office_time(self.arrival + timedelta(days=rng.randint(60, 330))),
                     self.office_after(self.registered, 3, 10))
        if at > self.end:
            return
        category = _weighted(rng, TITLE_CATEGORIES)
        title = self.grant_title(at, category)
        if self.holder("benefits", at) != (SO, "ASYLBLG"):
            return
        legal_end = _end_of_month(at)
        if category == "protection":
            self.r1(at, legal_end, title)
        elif category in ("opportunity", "family"):
            # No rule expects this handover; the Sozialamt passes benefits on by itself.
            offer = self.office_after(at, 3, 20)
            self.handover("benefits", SO, JC, "SGB_II", at, offer, offer + timedelta(days=25),
                          f"residence title {title}: entitled to SGB II", "on_time", at_deadline=False)
        elif category == "employment":
            self.emit(SO, "CaseClosedByAgency", legal_end, {"area": "benefits", "reason": "need_ended"})

    def grant_title(self, at: datetime, category: str) -> str:
        title, months = self.rng.choice(TITLES[category])
        if category == "protection" and self.country == "UA":
            title = "§ 24 AufenthG"
        valid = _add_months(_day(at), months).isoformat() if months else None
        self.emit(FO, "ResidenceTitleGranted", at, {"title": title, "category": category, "valid_until": valid})
        return title

    def long_term_residence(self) -> None:
        rng = self.rng
        at = self.office_time(self.start + timedelta(days=rng.randrange((_day(self.end) - self.start).days)))
        if at <= self.registered:
            return
        naturalisable = (_day(at) - self.arrival).days >= 6 * 365
        if naturalisable and rng.random() < 0.15 * self.years:
            self.emit(FO, "NaturalisationCompleted", at, {})
            self.naturalised = self.office_after(at, 7, 40)
        elif rng.random() < 0.12:
            self.grant_title(at, "other" if naturalisable else "protection")

    def r1(self, title_at: datetime, legal_end: datetime, title: str) -> None:
        rng = self.rng
        if self.birth_year <= _day(title_at).year - 65:
            # Unable to work: the Sozialamt keeps benefits, now under SGB XII.
            self.emit(SO, "CaseOpenedByAgency", legal_end, {"area": "benefits", "legal_domain": "SGB_XII"})
            return
        if rng.random() < 0.02:
            self.emit(SO, "CaseClosedByAgency", legal_end, {"area": "benefits", "reason": "need_ended"})
            return
        offer = self.between(title_at, min(title_at + timedelta(days=8), legal_end - timedelta(hours=1)))
        assert offer is not None  # a title is granted in office hours, hours before midnight
        outcome = _weighted(rng, [("on_time", 86), ("late", 5), ("forgotten", 4), ("rejected", 5)])
        self.handover("benefits", SO, JC, "SGB_II", title_at, offer, legal_end,
                      f"recognised ({title}): SGB II from {_day(legal_end).isoformat()}", outcome,
                      at_deadline=rng.random() < 0.85)

    def handover(self, area: str, sender: str, receiver: str, domain: str, trigger: datetime, offer_at: datetime,
                 deadline: datetime, reason: str, outcome: str, *, at_deadline: bool) -> datetime | None:
        """An offer and its answer; returns when the receiver took over (None: never)."""
        rng = self.rng
        offer = self.offer(area, sender, receiver, domain, offer_at, reason)
        if outcome == "forgotten":
            self.chains.append((area, trigger, None))
            return None
        if outcome == "rejected":
            rejected_at = self.office_after(offer_at, 1, 9)
            self.emit(receiver, "HandoverRejected", rejected_at,
                      {"handover_id": offer.data["handover_id"], "reason": rng.choice(REJECTIONS[area])})
            offer_at = self.office_after(rejected_at, 1, 6)
            offer = self.offer(area, sender, receiver, domain, offer_at, f"offered again: {reason}")
            outcome = "on_time" if offer_at < deadline else "late"
        recorded = None
        if outcome == "late":
            accepted_at = self.office_after(max(deadline, offer_at), 3, 40)
        elif at_deadline:
            accepted_at = deadline
            # Often accepted in advance, with effect from the legal end.
            recorded = offer.recorded + timedelta(minutes=rng.randint(60, 12 * 1440))
        else:
            accepted_at = self.between(offer_at, deadline) or deadline
        self.emit(receiver, "HandoverAccepted", accepted_at, {"handover_id": offer.data["handover_id"]},
                  recorded=recorded)
        self.chains.append((area, trigger, accepted_at))
        self.accepted.append((area, receiver, accepted_at))
        return accepted_at

    def offer(self, area: str, sender: str, receiver: str, domain: str, at: datetime, reason: str) -> _Draft:
        handover_id = self.new_id("ho")
        self.handover_areas[handover_id] = area
        return self.emit(sender, "HandedOverToAgency", at, {
            "handover_id": handover_id, "area": area, "to_agency": receiver, "to_legal_domain": domain,
            "reason": reason})

    # -- language and the labour market (rule R2) ------------------------------------------------

    def labour_agency(self, at: datetime) -> str:
        """Who acts for the person's labour market at `at`: its holder, else the case manager."""
        holder = self.holder("labour_market", at)
        return holder[0] if holder else self.registrar

    def measure(self, agency: str, kind: str, assigned: datetime, lead_days: tuple[int, int],
                length_days: tuple[int, int], aborted: float, provider: str | None = None,
                open_ended: bool = False) -> tuple[date, datetime | None] | None:
        """Assign a measure (None after the end of the history); returns its first day and
        when it was completed (None: aborted, or not over by the end of the history).

        An open-ended measure is assigned without a planned end but still ends some day.
        """
        rng = self.rng
        if assigned > self.end:
            return None
        starts = _workday(_day(assigned) + timedelta(days=rng.randint(*lead_days)))
        ends = starts + timedelta(days=rng.randint(*length_days))
        measure_id = self.new_id("m")
        self.emit(agency, "MeasureAssigned", assigned, {
            "measure_id": measure_id, "kind": kind, "provider": provider or rng.choice(PROVIDERS[kind]),
            "starts": starts.isoformat(), "ends": None if open_ended else ends.isoformat()})
        if rng.random() < aborted:
            begun = max(starts, _day(assigned))  # some join a course already running
            stopped = self.office_time(begun + (ends - begun) * rng.random())
            if stopped <= self.end:
                self.emit(agency, "MeasureCompleted", stopped, {"measure_id": measure_id, "outcome": "aborted"})
            return starts, None
        done = _local(_workday(ends), 15)
        if done > self.end:
            return starts, None
        self.emit(agency, "MeasureCompleted", done, {"measure_id": measure_id, "outcome": "completed"})
        return starts, done

    def language(self) -> None:
        rng = self.rng
        if self.german_at(self.agreed_at) >= 2:
            self.advanced_course(self.agreed_at)
            return
        if rng.random() >= 0.85:
            return
        kind, provider = "integration_course", None
        if self.cohort == MINOR:
            kind, provider = "language_course", rng.choice(PROVIDERS["school_course"])
        assigned = self.office_after(self.agreed_at, 1, 20)
        agency = self.labour_agency(assigned)
        # Half of those taken over from the asylum procedure are in a course already.
        lead = (-150, -20) if self.cohort == BACKLOG and rng.random() < 0.5 else (7, 42)
        run = self.measure(agency, kind, assigned, lead, (150, 240), 0.1, provider)
        if run is None or run[1] is None:
            return
        exam = self.office_after(run[1], 0, 14)
        b1 = {-1: 0.45, 0: 0.5, 1: 0.65}[self.german_at(exam)]
        level = 2 if rng.random() < b1 else 1
        self.level_reached(agency, exam, level, "DTZ")
        if level == 1 and rng.random() < 0.5:
            repeat = self.office_after(exam, 14, 60)
            agency = self.labour_agency(repeat)
            run = self.measure(agency, "language_course", repeat, (14, 35), (110, 180), 0.1)
            if run and run[1] and rng.random() < 0.5:
                self.level_reached(agency, self.office_after(run[1], 0, 14), 2, "DTZ")

    def level_reached(self, agency: str, at: datetime, level: int, certificate: str) -> None:
        if at > self.end:
            return
        rng = self.rng
        skills = {skill: CEFR[max(0, min(5, level + rng.choice((-1, 0, 0, 0, 1))))]
                  for skill in ("listening", "reading", "writing", "speaking")}
        self.emit(agency, "LanguageLevelReached", at,
                  {"language": "de", "level": CEFR[level], "certificate": certificate, "per_skill": skills})
        self.german.append((at, level))
        if level == 2:
            self.goal_achieved("language", at)
            self.r2(at)

    def r2(self, reached: datetime) -> None:
        rng = self.rng
        holder = self.holder("labour_market", reached)
        if holder is None or holder[0] != IC:
            self.advanced_course(reached)
            return
        receiver, domain = (JC, "SGB_II") if self.holder("benefits", reached) == (JC, "SGB_II") else (EA, "SGB_III")
        offer = self.office_after(reached, 0, 10)
        outcome = _weighted(rng, [("on_time", 82), ("late", 10), ("forgotten", 5), ("rejected", 3)])
        took_over = self.handover("labour_market", IC, receiver, domain, reached, offer,
                                  reached + timedelta(days=20), "German B1 reached: placement and counselling",
                                  outcome, at_deadline=False)
        if took_over is None:
            return
        if receiver == EA:
            # Once the Jobcenter pays benefits it also takes the labour market (SGB III → SGB II).
            switches = [at for area, to, at in self.accepted if area == "benefits" and to == JC and at > reached]
            if switches:
                offer = self.office_after(max(switches[0], took_over), 3, 20)
                if offer <= self.end:
                    self.handover("labour_market", EA, JC, "SGB_II", offer, offer, offer + timedelta(days=14),
                                  "benefits now under SGB II", "on_time", at_deadline=False)
        self.advanced_course(took_over)

    def advanced_course(self, after: datetime) -> None:
        rng = self.rng
        if self.cohort == MINOR or rng.random() >= 0.25:
            return
        assigned = self.office_after(after, 30, 90)
        agency = self.labour_agency(assigned)
        if agency == IC or self.german_at(assigned) >= 3:
            return  # B2 courses (Berufssprachkurse) come from the Jobcenter or the Agentur
        run = self.measure(agency, "language_course", assigned, (14, 42), (150, 200), 0.12)
        if run and run[1] and rng.random() < 0.5:
            self.level_reached(agency, self.office_after(run[1], 0, 21), 3, "telc Deutsch B2")

    # -- other measures, internships, jobs --------------------------------------------------

    def measures(self) -> None:
        rng = self.rng
        for index, qualification in enumerate(self.qualifications):
            if qualification["kind"] in ("vocational", "academic") and rng.random() < 0.6:
                run = self.measure(self.registrar, "recognition_counselling",
                                   self.office_after(self.agreed_at, 7, 90), (7, 28), (60, 120), 0.1)
                if run and run[1]:
                    self.recognition.append((run[1], index, "in_progress"))
                    result = _weighted(rng, [("recognised", 40), ("partial", 35), ("rejected", 25)])
                    decided = self.office_after(run[1], 60, 180)
                    self.recognition.append((decided, index, result))
                    if result != "rejected":
                        self.goal_achieved("recognition", decided)
        if "health" in self.goals or ("psychosocial support" in self.needs and rng.random() < 0.5):
            run = self.measure(self.registrar, "psychosocial_counselling",
                               self.office_after(self.profile_at, 7, 60), (7, 30), (90, 300), 0.2, open_ended=True)
            if run and "health" in self.goals:
                self.goal_achieved("health", self.office_after(_local(run[0]), 90, 270))
        at = self.office_after(self.agreed_at, 7, 150)
        if rng.random() < 0.08 and self.holder("benefits", at) == (SO, "ASYLBLG"):
            self.measure(IC, "fim", at, (7, 21), (90, 180), 0.2)
        at = self.office_after(self.agreed_at, 7, 200)
        if rng.random() < 0.08 and self.holder("benefits", at) == (JC, "SGB_II"):
            self.measure(JC, "work_opportunity", at, (7, 21), (120, 300), 0.2)
        if rng.random() < 0.12:
            at = self.office_after(self.agreed_at, 14, 240)
            self.measure(self.labour_agency(at), "other", at, (3, 21), (10, 40), 0.1)

    def random_instant(self, earliest: datetime, latest: datetime | None = None) -> datetime | None:
        """An office-hours instant between `earliest` and `latest` (default: the end of the history)."""
        latest = latest or self.end
        if earliest >= latest:
            return None
        at = self.office_time(_day(earliest + (latest - earliest) * self.rng.random()))
        return at if earliest < at <= latest else None

    def chances(self, rate: float) -> int:
        """How many times something happening `rate` times a year happens to this person."""
        expected = rate * self.years
        return int(expected) + int(self.rng.random() < expected - int(expected))

    def work(self) -> None:
        rng = self.rng
        for _ in range(self.chances(INTERNSHIP_RATE[self.cohort])):
            # Placed so that the internship begins within the history.
            at = self.random_instant(self.registered + timedelta(days=21), self.end - timedelta(days=21))
            if at is None:
                continue
            agency = self.labour_agency(at)
            run = self.measure(agency, "internship", at, (3, 21), (14, 84), 0.15)
            if run:
                hours = rng.choice((None, 20.0, 30.0, 38.5, 40.0))
                self.emit(agency, "EmploymentStarted", _local(run[0], 8),
                          {"kind": "internship", "hours_per_week": hours})
        age = "minor" if self.cohort == MINOR else (
            "young" if self.birth_year >= _day(self.registered).year - 27 else "older")
        if rng.random() < APPRENTICESHIP_RATE[age] * self.years:
            self.apprenticeship()
        elif rng.random() < min(0.9, EMPLOYMENT_RATE[self.cohort] * self.years):
            self.employment()

    def apprenticeship(self) -> None:
        earliest = _day(self.registered) + timedelta(days=60)
        starts = [date(year, month, 1) for year in range(earliest.year, _day(self.end).year + 1)
                  for month in (8, 9) if earliest <= date(year, month, 1) and _local(date(year, month, 1)) < self.end]
        if not starts:
            instant = self.random_instant(_local(earliest))
            if instant is None:
                return
            starts = [_add_months(_day(instant).replace(day=1), 1)]
        at = _local(self.rng.choice(starts), 7)
        if at > self.end:
            return
        self.emit(self.labour_agency(at), "EmploymentStarted", at,
                  {"kind": "apprenticeship", "hours_per_week": self.rng.choice((39.0, 40.0))})
        self.goal_achieved("training", at)

    def employment(self) -> None:
        rng = self.rng
        picked = self.random_instant(self.registered + timedelta(days=28))
        if picked is None:
            return
        at = _local(_day(picked), 7)
        kind = _weighted(rng, [("employment", 68), ("minijob", 27), ("self_employed", 5)])
        hours = {"employment": rng.choice((20.0, 25.0, 30.0, 35.0, 38.5, 39.0, 40.0, 40.0)),
                 "minijob": float(rng.randint(6, 12)), "self_employed": None}[kind]
        self.emit(self.labour_agency(at), "EmploymentStarted", at, {"kind": kind, "hours_per_week": hours})
        if kind != "employment":
            return
        self.goal_achieved("employment", self.office_after(at, 1, 14))
        if hours is None or hours < 30 or rng.random() >= 0.45:
            return
        # Own income: benefits end, and the case manager can hand over to the regular services.
        settled = self.settled("benefits")
        ends = _local(_add_months(_day(at).replace(day=1), rng.randint(2, 3)))
        holder = self.holder("benefits", ends)
        if settled is None or settled >= ends or ends > self.end or holder is None:
            return
        self.emit(holder[0], "CaseClosedByAgency", ends, {"area": "benefits", "reason": "need_ended"})
        market, market_settled = self.holder("labour_market", ends), self.settled("labour_market")
        if market and market_settled and market_settled < ends and rng.random() < 0.5:
            self.emit(market[0], "CaseClosedByAgency", ends + timedelta(hours=9),
                      {"area": "labour_market", "reason": "need_ended"})
        if rng.random() < 0.5:
            self.regular_services = self.office_after(ends, 30, 120)

    # -- incidents and endings ----------------------------------------------------------------

    def not_competent(self) -> None:
        """The Jobcenter closes benefits believing another office is competent: a gap."""
        rng = self.rng
        settled = self.settled("benefits")
        if settled is None or rng.random() >= 0.035 * self.years:
            return
        at = self.random_instant(settled + timedelta(days=14))
        if at is None or self.holder("benefits", at) != (JC, "SGB_II"):
            return
        self.emit(JC, "CaseClosedByAgency", at, {"area": "benefits", "reason": "not_competent"})
        if rng.random() < 0.25:
            self.chains.append(("benefits", at, None))  # never reopened: the gap stays open
            return
        reopened = self.office_after(at, 2, 35)
        agency, domain = (SO, "SGB_XII") if rng.random() < 0.2 else (JC, "SGB_II")
        self.emit(agency, "CaseOpenedByAgency", reopened, {"area": "benefits", "legal_domain": domain})
        self.chains.append(("benefits", at, reopened))

    def consent_changes(self) -> None:
        if self.rng.random() < 0.02:
            at = self.random_instant(self.registered + timedelta(days=14))
            if at is not None:
                self.emit(self.registrar, "ConsentWithdrawn", at, {"shared_with": [self.rng.choice(self.shared)]})

    def youth_ends(self) -> None:
        if self.cohort != MINOR or self.rng.random() >= 0.4:
            return
        of_age = _local(date(self.birth_year + 18, 1, 1))
        at = self.random_instant(max(of_age, self.registered + timedelta(days=60)))
        if at is not None:
            self.emit(YO, "CaseClosedByAgency", at, {"area": "youth", "reason": "need_ended"})

    def reassessments(self) -> None:
        at = self.profile_at
        while True:
            at = self.office_after(at, 161, 203)
            if at > self.end:
                return
            self.emit(self.registrar, "ReAssessmentCompleted", at, self.profile(at))

    def leave(self) -> None:
        """The person leaves KIM: moved away, withdrew, naturalised or served by the regular services."""
        rng = self.rng
        candidates: list[tuple[datetime, str]] = []
        if self.naturalised:
            candidates.append((self.naturalised, "naturalised"))
        if self.regular_services:
            candidates.append((self.regular_services, "regular_services_reached"))
        for reason, rate in (("moved_away", 0.03), ("withdrew", 0.01)):
            if rng.random() < rate * self.years:
                at = self.random_instant(self.registered + timedelta(days=30))
                if at is not None:
                    candidates.append((at, reason))
        if not candidates:
            return
        at, reason = min(candidates)
        # Never in the middle of a handover: the demo's overdue handovers and gaps are deliberate.
        for _, since, until in sorted(self.chains, key=lambda chain: chain[1]):
            if since <= at:
                if until is None:
                    return
                if at <= until:
                    at = self.office_after(until, 1, 10)
        if at > self.end:
            return
        self.drafts = [draft for draft in self.drafts if draft.time <= at]
        if reason == "withdrew":
            self.emit(self.registrar, "ConsentWithdrawn", at - timedelta(minutes=30),
                      {"shared_with": list(self.shared)})
        for area in ("labour_market", "benefits", "youth", "case_management"):
            holder = self.holder(area, at)
            if holder is None:
                continue
            if reason == "moved_away":
                self.emit(holder[0], "CaseClosedByAgency", at, {"area": area, "reason": "moved_away"})
            elif area == "case_management" or (area == "labour_market" and holder[0] == IC):
                # KIM's own support ends; benefits and youth welfare go on as regular services.
                self.emit(holder[0], "CaseClosedByAgency", at, {"area": area, "reason": "need_ended"})
        self.emit(self.registrar, "CaseClosed", at + timedelta(minutes=1), {"reason": reason})


def _envelope(person: _Person, draft: _Draft, number: int) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"{draft.agency[:3]}-{person.tag}-{number:03d}",
        "source": f"urn:kim:{draft.agency}:{person.offices[draft.agency]}",
        "type": f"de.kim.{draft.name}.v1",
        "subject": person.subject,
        "time": _iso(draft.time),
        "recordedtime": _iso(draft.recorded),
        "datacontenttype": "application/json",
        "data": draft.data,
    }


def district_span(years: float, start: date | None = None) -> tuple[date, date]:
    """First and last-plus-one day of the district's history for `years` (whole months)."""
    months = max(1, round(years * 12))
    if start is None:
        start = _add_months(DEFAULT_END, -months)
    return start, _add_months(start, months)


def generate_district(persons: int, years: float, seed: int, start: date | None = None) -> list[dict[str, Any]]:
    """The events of a synthetic district of `persons` persons over `years`, in effective-time order.

    Deterministic: the same arguments give the same events, ids included. `years`
    is rounded to whole months; without `start` the history ends on 1 January 2026.
    """
    if persons < 0:
        raise ValueError("persons must not be negative")
    if years <= 0:
        raise ValueError("years must be positive")
    first, last = district_span(years, start)
    end = _local(last)
    length = ((last.year - first.year) * 12 + last.month - first.month) / 12
    timeline: list[tuple[datetime, int, int, dict[str, Any]]] = []
    for index in range(persons):
        rng = random.Random(f"kim-demo|{seed}|{first.isoformat()}|{length}|{index}")
        person = _Person(rng, first, end, length)
        drafts = sorted(person.build(), key=lambda d: d.time)
        for number, draft in enumerate(drafts, 1):
            timeline.append((draft.time, index, number, _envelope(person, draft, number)))
    timeline.sort(key=lambda item: item[:3])
    return [envelope for *_, envelope in timeline]
