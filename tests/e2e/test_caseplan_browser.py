"""The case managers' screens in a real browser: headless Chromium (Debian's) driven by Selenium.

Gateway, referral, intake and caseplan run as real processes (`python -m services.<name>`)
on free ports against the session's Kafka broker, with SQLite stores as `kim up` uses.
A case manager signs in, registers a person, records consent, drafts and signs a plan;
then the Sozialamt closes its area as not competent and the gap alert appears on the
caseload and in red in the person's responsibility chart. Screenshots of every step go
to artifacts/screenshots/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from kim.auth import issue_dev_token
from kim.infra.kafka import create_topics, free_port
from kim.topics import ALL_TOPICS
from tests.conftest import wait_until

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="pip install selenium (the [test] extra)")
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                                reason="Debian's chromium and chromium-driver are not installed "
                                       "(bash deploy/install-deps.sh)")

from selenium.webdriver.chrome.service import Service  # noqa: E402 - after the skip checks
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
SECRET = "caseplan-browser-secret-of-thirty-two-b"
SERVICES = ("gateway", "referral", "intake", "caseplan")


class Stack:
    """The four services as processes; `url(name)` is where each listens."""

    def __init__(self, bootstrap: str, data_dir: Path) -> None:
        self.ports = {name: free_port() for name in SERVICES}
        run = uuid.uuid4().hex[:6]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KIM_")}
        self.env.update({"KIM_KAFKA_BOOTSTRAP": bootstrap, "KIM_DATA_DIR": str(data_dir),
                         "KIM_AUTH_HS256_SECRET": SECRET, "KIM_REFERRAL_GROUP": f"referral-{run}",
                         "KIM_INTAKE_GROUP": f"intake-{run}", "KIM_CASEPLAN_GROUP": f"caseplan-{run}",
                         "KIM_INTAKE_URL": self.url("intake"), "KIM_REFERRAL_URL": self.url("referral")})
        self.logs = data_dir / "logs"
        self.processes: dict[str, subprocess.Popen] = {}

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in SERVICES:
            with open(self.logs / f"{name}.log", "wb") as log:
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", f"services.{name}", "--port", str(self.ports[name])],
                    cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        for name in SERVICES:
            wait_until(lambda: self._ready(name), timeout=90, interval=0.3, message=f"{name} ready")

    def _ready(self, name: str) -> bool:
        if self.processes[name].poll() is not None:
            raise AssertionError(f"{name} exited:\n{self.log_tail(name)}")
        try:
            return httpx.get(self.url(name) + "/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[Stack]:
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    services = Stack(kafka_bootstrap, tmp_path_factory.mktemp("caseplan-browser"))
    try:
        services.start()
        yield services
    finally:
        services.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1366,900", "--lang=de-DE",
                     f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(argument)
    # German locale, so that date fields show TT.MM.JJJJ as on the case managers' laptops.
    options.add_experimental_option("prefs", {"intl.accept_languages": "de-DE,de"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER, env={**os.environ, "LANGUAGE": "de", "LANG": "de_DE.UTF-8"}),
                              options=options)
    driver.set_page_load_timeout(30)
    driver.implicitly_wait(5)  # elements of the page a click leads to
    try:
        yield driver
    finally:
        driver.quit()


def screenshot(driver, name: str) -> Path:
    """The whole page, not just the window."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1366, max(900, min(height + 40, 7000)))
    path = SCREENSHOTS / f"{name}.png"
    driver.save_screenshot(str(path))
    driver.set_window_size(1366, 900)
    return path


def fill(driver, form_id: str, values: dict[str, str]) -> None:
    form = driver.find_element(By.ID, form_id)
    for name, value in values.items():
        field = form.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            # Date inputs take their value as the browser's locale shows it; set it directly.
            driver.execute_script("arguments[0].value = arguments[1]", field, value)


def submit(driver, form_id: str) -> None:
    driver.find_element(By.ID, form_id).find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def text(driver) -> str:
    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except WebDriverException:  # the page is being replaced by the next one (stale or detached node)
        return ""


def expect(driver, needle: str, timeout: float = 15) -> None:
    """Wait for the page that a click or submit leads to."""
    wait_until(lambda: needle in text(driver), timeout=timeout, interval=0.1,
               message=f"'{needle}' on {driver.current_url}")


def reload_until(driver, needle: str, timeout: float = 30) -> None:
    def shown() -> bool:
        driver.refresh()
        return needle in text(driver)

    wait_until(shown, timeout=timeout, interval=0.5, message=f"'{needle}' on {driver.current_url}")


def publish(stack: Stack, agency: str, events: list[dict]) -> None:
    token = issue_dev_token(SECRET, sub="system", agency=agency, roles=["agency_system"])
    response = httpx.post(stack.url("gateway") + "/v1/events", content=json.dumps(events), timeout=30,
                          headers={"content-type": "application/cloudevents-batch+json",
                                   "authorization": f"Bearer {token}"})
    assert response.status_code == 202, response.text


def area_event(subject: str, name: str, time: datetime, data: dict) -> dict:
    at = time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    return {"specversion": "1.0", "id": f"{subject}-{name}", "source": "urn:kim:social_welfare_office:biberach",
            "type": f"de.kim.{name}.v1", "subject": subject, "time": at, "recordedtime": at,
            "datacontenttype": "application/json", "data": data}


def test_a_case_manager_registers_consents_signs_a_plan_and_sees_a_gap_alert(stack, browser):
    driver, base = browser, stack.url("caseplan")
    try:
        driver.get(base + "/")
        assert "/login" in driver.current_url and "Anmelden" in text(driver)
        driver.find_element(By.NAME, "sub").send_keys("m.yilmaz")
        Select(driver.find_element(By.NAME, "agency")).select_by_value("integration_center")
        Select(driver.find_element(By.NAME, "role")).select_by_value("case_manager")
        screenshot(driver, "01-login")
        driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
        expect(driver, "Meine Fallliste")

        # register a person (intake)
        driver.find_element(By.LINK_TEXT, "Person registrieren").click()
        fill(driver, "register", {"given_name": "Amira", "family_name": "Haddad", "birth_date": "1991-04-17",
                                  "municipality": "Biberach an der Riß", "arrival_date": "2025-09-03",
                                  "country_of_origin": "SY", "phone": "07351 123456", "language": "ar"})
        screenshot(driver, "02-register-form")
        submit(driver, "register")
        expect(driver, "Die Person wurde registriert.")
        subject = driver.current_url.split("/persons/")[1].split("?")[0]
        assert subject.startswith("P-") and "Amira Haddad" in text(driver)
        reload_until(driver, "Person registriert")  # PersonRegistered came back through Kafka

        # record consent for the Jobcenter and the Sozialamt
        form = driver.find_element(By.ID, "consent-form")
        for agency in ("job_center", "social_welfare_office"):
            form.find_element(By.CSS_SELECTOR, f"input[name=shared_with][value={agency}]").click()
        submit(driver, "consent-form")
        expect(driver, "Die Einwilligung wurde erfasst.")
        assert "Jobcenter, Sozialamt" in driver.find_element(By.ID, "consents").text

        # draft, set a goal, sign
        driver.find_element(By.ID, "draft-plan").click()
        expect(driver, "Ein Entwurf des Integrationsplans wurde angelegt.")
        fill(driver, "goal-form", {"kind": "language", "target": "Deutsch B1 (DTZ)",
                                   "due": (date.today() + timedelta(days=180)).isoformat()})
        submit(driver, "goal-form")
        expect(driver, "Das Ziel wurde in den Plan aufgenommen.")
        fill(driver, "goal-form", {"kind": "employment", "target": "Arbeit als Elektriker", "due": "2024-01-01"})
        submit(driver, "goal-form")  # a goal already due: an alert once the plan is signed
        expect(driver, "Arbeit als Elektriker")
        driver.find_element(By.ID, "sign-plan").click()
        expect(driver, "Die Integrationsvereinbarung wurde als unterschrieben erfasst.")
        fill(driver, "measure-form", {"kind": "integration_course", "provider": "VHS Biberach",
                                      "starts": date.today().isoformat(),
                                      "ends": (date.today() + timedelta(days=120)).isoformat()})
        submit(driver, "measure-form")
        expect(driver, "Die Maßnahme wurde zugewiesen.")
        reload_until(driver, "Integrationsvereinbarung unterschrieben")
        assert "Ziel überfällig: Arbeit als Elektriker" in text(driver)
        screenshot(driver, "03-person-plan-signed")

        # a rule broken in the form: shown in German, nothing changed
        fill(driver, "measure-form", {"kind": "fim", "provider": "Stadt Biberach", "starts": "2026-05-10",
                                      "ends": "2026-05-01"})
        submit(driver, "measure-form")
        expect(driver, "Ende: ungültige Angabe")

        # the Sozialamt closes benefits as not competent: a gap opens
        now = datetime.now(timezone.utc)
        publish(stack, "social_welfare_office", [
            area_event(subject, "CaseOpenedByAgency", now - timedelta(days=40),
                       {"area": "benefits", "legal_domain": "ASYLBLG"}),
            area_event(subject, "CaseClosedByAgency", now - timedelta(days=2),
                       {"area": "benefits", "reason": "not_competent"})])
        driver.get(base + "/")
        reload_until(driver, "Zuständigkeitslücke im Bereich Leistungen")
        row = driver.find_element(By.XPATH, f"//table[@id='alerts']//a[text()='{subject}']/ancestor::tr")
        assert "Lücke" in row.text and "Sozialamt" in row.text
        assert row.get_attribute("class") == "gap", "the gap is the row's first alert"
        screenshot(driver, "04-caseload-gap-alert")

        row.find_element(By.LINK_TEXT, subject).click()
        chart = driver.find_element(By.CSS_SELECTOR, "#zustaendigkeit svg")
        assert chart.find_elements(By.CSS_SELECTOR, "g.gap"), "the gap is drawn"
        assert "Lücke (niemand zuständig)" in chart.text and "Leistungen" in chart.text
        assert "Zuständigkeitslücke" in driver.find_element(By.ID, "hinweise").text
        screenshot(driver, "05-person-responsibility-chart")
    except BaseException:
        screenshot(driver, "99-failure")
        for name in SERVICES:
            print(f"--- {name} log ---\n{stack.log_tail(name)}")
        raise
