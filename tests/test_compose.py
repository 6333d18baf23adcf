"""docker-compose.yml checked structurally (no Docker engine here): it parses, every
Weftline command exists in the CLI, every environment name is one Weftline reads, and the
environment, with .env.example's values, makes valid Settings."""

from __future__ import annotations

import os
import re
import string

import yaml

from tests.conftest import REPO
from weftline.cli import build_parser
from weftline.ground.config import Settings

COMPOSE = REPO / "docker-compose.yml"


def load() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def env_example() -> dict[str, str]:
    out = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            out[k] = v
    return out


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error}."""

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if name in env:
            return env[name]
        assert op != ":?", f"{name} must be set: {arg}"
        return arg or ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", sub, value)


def settings_names() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"WEFTLINE_{name.upper()}")
        alias = field.validation_alias
        if alias is not None:
            names.update(str(a) for a in getattr(alias, "choices", [alias]))
    return names


def test_services_and_images():
    services = load()["services"]
    assert {"valkey", "clickhouse", "grafana", "api", "worker", "migrate"} <= set(services)
    assert services["valkey"]["image"].startswith("valkey/valkey:8")
    assert "--appendonly" in services["valkey"]["command"]
    assert re.match(r"clickhouse/clickhouse-server:25\.", services["clickhouse"]["image"])
    assert (
        "grafana-clickhouse-datasource" in services["grafana"]["environment"]["GF_INSTALL_PLUGINS"]
    )
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    for name in ("valkey", "clickhouse", "api"):
        assert "test" in services[name]["healthcheck"]
    assert (REPO / "Dockerfile").exists()


def test_weftline_commands_exist_in_the_cli():
    parser = build_parser()
    entry = re.search(r'ENTRYPOINT \["weftline"\]', (REPO / "Dockerfile").read_text())
    assert entry
    for name, svc in load()["services"].items():
        if svc.get("build") != ".":
            continue
        args = parser.parse_args(svc["command"])  # exits (fails the test) if unknown
        assert args.command == svc["command"][0], name


def test_environment_names_are_read_and_make_valid_settings(monkeypatch):
    known = settings_names()
    env = env_example()
    for name, svc in load()["services"].items():
        if svc.get("build") != ".":
            continue
        environment = svc["environment"]
        for key in environment:
            assert key in known, f"{name}: {key} is not a Weftline setting"
        for k in list(os.environ):
            if k.startswith("WEFTLINE_") or k in ("VALKEY_URL", "CLICKHOUSE_URL"):
                monkeypatch.delenv(k)
        for key, value in environment.items():
            monkeypatch.setenv(key, interpolate(str(value), env))
        s = Settings()
        assert s.valkey_url == "redis://valkey:6379/0"
        assert s.clickhouse_url and s.clickhouse_url.startswith("http://weftline:")
        assert s.projects and s.projects[0].public_key == env["WEFTLINE_PUBLIC_KEY"]
        assert s.durability == "aof"


def test_env_example_keys_are_used():
    text = COMPOSE.read_text()
    for key in env_example():
        assert "${" + key in text, key
    assert set(string.hexdigits) >= set(env_example()["WEFTLINE_PUBLIC_KEY"])


def test_grafana_mounts_match_the_provisioning_layout():
    """What `weftline grafana build` writes is where Grafana reads it, and every $VAR
    the provisioning files use is set in Grafana's environment."""
    from weftline.dashboards.grafana.build import DASHBOARD_PROVIDER_YAML, GRAFANA_DIR

    services = load()["services"]
    grafana = services["grafana"]
    mounts = {}
    for v in grafana["volumes"]:
        src, dst = v.split(":")[:2]
        mounts[dst] = src
    prov = REPO / mounts["/etc/grafana/provisioning"]
    assert prov == GRAFANA_DIR / "provisioning"
    for sub in ("datasources", "dashboards", "alerting"):
        assert list((prov / sub).glob("*.yaml")), sub
    provider_path = yaml.safe_load(DASHBOARD_PROVIDER_YAML)["providers"][0]["options"]["path"]
    dash = REPO / mounts[provider_path]
    assert dash == GRAFANA_DIR / "dashboards" and len(list(dash.glob("*.json"))) == 6
    used = set()
    for f in prov.rglob("*.yaml"):
        used |= set(re.findall(r"\$\{(\w+)\}", f.read_text()))
    assert used and used <= set(grafana["environment"]), used - set(grafana["environment"])
    prom = services["prometheus"]
    src = prom["volumes"][0].split(":")[0]
    scrape = yaml.safe_load((REPO / src).read_text())["scrape_configs"][0]
    assert scrape["dns_sd_configs"][0]["names"] == ["api"] and "api" in services
    assert grafana["environment"]["WEFTLINE_PROMETHEUS_URL"] == "http://prometheus:9090"


def test_prometheus_scrapes_every_api_and_worker():
    services = load()["services"]
    src = services["prometheus"]["volumes"][0].split(":")[0]
    jobs = yaml.safe_load((REPO / src).read_text())["scrape_configs"]
    scraped = {
        name: sd["port"] for job in jobs for sd in job["dns_sd_configs"] for name in sd["names"]
    }
    parser = build_parser()
    for name, svc in services.items():
        if svc.get("build") != "." or svc["command"][0] not in ("api", "worker"):
            continue
        args = parser.parse_args(svc["command"])
        port = args.port if args.command == "api" else args.metrics_port
        assert scraped.get(name) == port, (name, port, scraped)
        if args.command == "worker":
            assert args.metrics_host == "0.0.0.0"  # reachable from the prometheus container
