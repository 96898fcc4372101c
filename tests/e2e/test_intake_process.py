"""The intake service as `kim up` runs it: its own process, SQLite under KIM_DATA_DIR,
the master key in a key file. Data stay readable across restarts, erasures stay
erasures, and a store is never opened with another master key."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from kim.auth import issue_dev_token
from kim.infra.kafka import create_topics, free_port
from kim.topics import ALL_TOPICS
from tests.e2e.processes import ROOT, intake_process

SECRET = "intake-process-secret-of-32-bytes-or-more"
CM = {"authorization": "Bearer " + issue_dev_token(SECRET, sub="cm", agency="integration_center",
                                                   roles=["case_manager"])}
ADMIN = {"authorization": "Bearer " + issue_dev_token(SECRET, sub="adm", agency="integration_center",
                                                      roles=["admin"])}
CANARY = {"given_name": "Brunhildor", "family_name": "Vexamantis", "birth_date": "1975-05-05",
          "municipality": "Riedlingen", "arrival_date": "2023-09-09", "country_of_origin": "IQ",
          "notes": "Vexamantis-Notiz"}


def environment(bootstrap: str, data_dir: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIM_")}
    return {**env, "KIM_KAFKA_BOOTSTRAP": bootstrap, "KIM_DATA_DIR": str(data_dir),
            "KIM_AUTH_HS256_SECRET": SECRET, "KIM_INTAKE_GROUP": f"intake-{uuid.uuid4().hex[:6]}", **more}


def test_data_survive_restarts_erasures_stay_and_a_wrong_master_key_is_refused(kafka_bootstrap, tmp_path):
    create_topics(kafka_bootstrap, ALL_TOPICS, partitions=6)
    data_dir, log = tmp_path / "data", tmp_path / "intake.log"
    env = environment(kafka_bootstrap, data_dir)
    with intake_process(env, log) as base:
        kept = httpx.post(f"{base}/v1/persons", json=CANARY, headers=CM).json()["subject"]
        erased = httpx.post(f"{base}/v1/persons", json=CANARY, headers=CM).json()["subject"]
        assert httpx.delete(f"{base}/v1/persons/{erased}", headers=ADMIN).status_code == 204
    assert (data_dir / "keys" / "intake-master.key").exists()
    with intake_process(env, log) as base:
        assert httpx.get(f"{base}/v1/persons/{kept}", headers=CM).json()["family_name"] == "Vexamantis"
        assert httpx.get(f"{base}/v1/persons/{erased}", headers=CM).status_code == 410
    stored = b"".join(p.read_bytes() for p in (data_dir / "stores").glob("intake.sqlite3*"))
    assert b"Vexamantis" not in stored and b"1975-05-05" not in stored
    assert b"Vexamantis" not in log.read_bytes(), "no personal data in the service log"

    other_key = base64.b64encode(secrets.token_bytes(32)).decode()
    refused = subprocess.run([sys.executable, "-m", "services.intake", "--port", str(free_port())], cwd=ROOT,
                             env={**env, "KIM_INTAKE_MASTER_KEY": other_key}, capture_output=True, text=True,
                             timeout=60)
    assert refused.returncode != 0
    assert "KIM_INTAKE_MASTER_KEY" in refused.stdout + refused.stderr
