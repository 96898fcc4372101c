"""The deployment files name what the code reads."""

from __future__ import annotations

from pathlib import Path

import yaml

from kim.infra.kafka import BrokerNode
from kim.service import SERVICE_PORTS
from kim.settings import KimSettings

ROOT = Path(__file__).resolve().parents[2]


def _settings_classes() -> list[type[KimSettings]]:
    """KimSettings and every service's subclass of it (services/*/settings.py)."""
    import importlib
    import inspect

    classes = [KimSettings]
    for path in sorted((ROOT / "services").glob("*/settings.py")):
        module = importlib.import_module(f"services.{path.parent.name}.settings")
        classes += [c for _, c in inspect.getmembers(module, inspect.isclass)
                    if issubclass(c, KimSettings) and c is not KimSettings and c.__module__ == module.__name__]
    return classes


def _variables_the_code_reads() -> set[str]:
    prefix = KimSettings.model_config["env_prefix"]
    return {prefix + name.upper() for cls in _settings_classes() for name in cls.model_fields}


def test_readme_documents_every_variable_and_its_rules_example_is_valid():
    from services.referral.rules import RulesConfig

    readme = (ROOT / "README.md").read_text()
    assert {v for v in _variables_the_code_reads() if f"`{v}`" not in readme} == set()
    example = readme.split("```toml", 1)[1].split("```", 1)[0]
    rules = RulesConfig.from_toml(example)
    assert rules.r1.enabled and not rules.r3.enabled


def test_compose_parses_and_runs_every_service_on_its_port_with_every_variable():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"kafka", "postgres"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:3.9.")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    for name, port in SERVICE_PORTS.items():
        service = services[name]
        assert f"services.{name}" in service["command"]
        assert f"{port}:{port}" in service["ports"]
        assert set(service["environment"]) == _variables_the_code_reads(), name
    assert "KIM_DATABASE_URL" in services["gateway"]["environment"]


def test_settings_treat_empty_variables_as_unset(monkeypatch):
    monkeypatch.setenv("KIM_RULES_FILE", "")
    monkeypatch.setenv("KIM_KAFKA_BOOTSTRAP", "")
    settings = KimSettings()
    assert settings.rules_file is None
    assert settings.bootstrap == "localhost:9092"


def test_settings_name_the_variable_and_rule_on_bad_values(monkeypatch):
    import subprocess
    import sys

    env = {"KIM_PARTITIONS": "zero", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "kim.cli", "kafka", "status"], env=env,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "KIM_PARTITIONS" in result.stderr and "integer" in result.stderr


def test_sqlite_is_the_default_store_and_postgresql_when_configured(monkeypatch, tmp_path):
    monkeypatch.setenv("KIM_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KIM_DATABASE_URL", raising=False)
    assert KimSettings().store_url("referral") == f"sqlite:///{tmp_path}/stores/referral.sqlite3"
    monkeypatch.setenv("KIM_DATABASE_URL", "postgresql://kim@db/kim")
    assert KimSettings().store_url("referral") == "postgresql://kim@db/kim"


def test_single_node_properties_are_kraft_broker_and_controller(tmp_path):
    props = dict(line.split("=", 1) for line in BrokerNode(tmp_path).properties().splitlines() if line)
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@localhost:9093"
    assert props["auto.create.topics.enable"] == "false"
    assert props["offsets.topic.replication.factor"] == "1"


def test_cluster_node_properties_share_voters_and_replicate(tmp_path):
    from kim.infra.kafka import KafkaCluster

    cluster = KafkaCluster(tmp_path, base_port=30000)
    props = [dict(line.split("=", 1) for line in n.properties().splitlines() if line) for n in cluster.nodes]
    assert {p["controller.quorum.voters"] for p in props} == {
        "1@localhost:30001,2@localhost:30003,3@localhost:30005"}
    assert [p["node.id"] for p in props] == ["1", "2", "3"]
    assert len({p["log.dirs"] for p in props}) == 3
    assert all(p["min.insync.replicas"] == "2" and p["default.replication.factor"] == "3" for p in props)
