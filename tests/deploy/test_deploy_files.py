"""The production files under deploy/ (compose, Dockerfile, nginx, Redis, systemd): no
container engine runs here, so the files themselves are checked: the compose file against the
Compose specification, every command they start against our own CLI's parsers, every
STORMALERT_* name against the settings classes, the units with systemd-analyze, redis.conf by
starting a server on it, and the heartbeat health check against a real Redis."""

from __future__ import annotations

import argparse
import copy
import importlib
import importlib.resources
import importlib.util
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import redis
import yaml
from jsonschema import Draft7Validator

from deploy.cli import PROCESS_COMMANDS
from deploy.embedded_redis import find_server_binary, free_port
from deploy.up import UpSettings
from engine.backtest import BacktestSettings
from engine.shard import EngineSettings
from ingest.settings import IngestSettings
from notify.settings import NotifySettings
from proto import keys
from proto.settings import BaseSettings
from web.settings import WebSettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
HEALTHCHECK = ROOT / "deploy" / "docker" / "healthcheck.py"
SYSTEMD = ROOT / "deploy" / "systemd"
SHARDS = 2
PROCESS_UNITS = ("ingest", "engine", "notify", "web", "backtest")
# A sample instance per template, as the README enables them.
INSTANCES = {"ingest": "kite", "engine": "0", "notify": "notify-1", "web": "8000",
             "backtest": "backtest-1", "watchdog": "engine-0"}
HARDENING = ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
             "RestrictAddressFamilies", "CapabilityBoundingSet")
SETTINGS_CLASSES = (BaseSettings, IngestSettings, EngineSettings, NotifySettings, WebSettings,
                    UpSettings, BacktestSettings)


def load_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def compose_errors(doc: dict[str, Any]) -> list[str]:
    """Violations of the Compose specification's JSON schema (the copy check-jsonschema
    vendors from compose-spec/compose-spec)."""
    schema_file = importlib.resources.files("check_jsonschema") / \
        "builtin_schemas/vendor/compose-spec.json"
    validator = Draft7Validator(json.loads(schema_file.read_text()))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(doc)]


def test_compose_file_follows_the_compose_specification() -> None:
    assert compose_errors(load_compose()) == []


def test_the_schema_check_rejects_a_broken_compose_file() -> None:
    doc = copy.deepcopy(load_compose())
    doc["services"]["engine-0"]["restart"] = ["always"]  # must be a string
    doc["services"]["web"]["healthcheck"]["intervall"] = "10s"  # no such key
    errors = compose_errors(doc)
    assert any("restart" in e for e in errors), errors
    assert any("intervall" in e for e in errors), errors


# Commands --------------------------------------------------------------------------------

class Parsed(Exception):
    def __init__(self, ns: argparse.Namespace) -> None:
        self.ns = ns


def parse_with(module: ModuleType, argv: list[str], monkeypatch: pytest.MonkeyPatch,
               ) -> argparse.Namespace:
    """Run ``module.main(argv)`` only as far as its argument parser: a bad argument exits 2
    (argparse's error), a good one returns the namespace, and nothing is started."""
    original = argparse.ArgumentParser.parse_args

    def parse_and_stop(self: argparse.ArgumentParser, args: Any = None,
                       namespace: Any = None) -> argparse.Namespace:
        raise Parsed(original(self, args, namespace))

    with monkeypatch.context() as m:
        m.setattr(argparse.ArgumentParser, "parse_args", parse_and_stop)
        try:
            module.main(argv)
        except Parsed as parsed:
            return parsed.ns
        except SystemExit as exc:
            raise AssertionError(f"{module.__name__} rejects {argv}: exit {exc.code}") from None
    raise AssertionError(f"{module.__name__}.main never parsed its arguments")


def healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_healthcheck", HEALTHCHECK)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_command(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                  ) -> tuple[str, argparse.Namespace]:
    """A ``stormalert CMD ...`` or ``stormalert-healthcheck ...`` command line, parsed by
    the parser of the process it would start."""
    program = Path(argv[0]).name
    if program == "stormalert-healthcheck" or argv[:2][-1].endswith("healthcheck.py"):
        rest = argv[2:] if argv[0].endswith("python") else argv[1:]
        return "healthcheck", parse_with(healthcheck_module(), rest, monkeypatch)
    assert program == "stormalert", f"not one of our commands: {argv}"
    cmd = argv[1]
    assert cmd in PROCESS_COMMANDS, f"`stormalert {cmd}` is not a process command"
    module = importlib.import_module(PROCESS_COMMANDS[cmd])
    if hasattr(module, "__path__"):  # a package: `python -m` runs its __main__
        module = importlib.import_module(f"{PROCESS_COMMANDS[cmd]}.__main__")
    return cmd, parse_with(module, argv[2:], monkeypatch)


def interpolate(text: str) -> str:
    """Compose's ${VAR:-default} with the default, as with nothing set."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", text)


def our_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in load_compose()["services"].items()
            if str(svc.get("image", "")).startswith("stormalert")}


def test_our_services_are_the_pipeline_with_two_engine_shards() -> None:
    services = our_services()
    assert sorted(services) == ["backtest", "engine-0", "engine-1", "ingest", "notify", "web"]
    for svc in services.values():
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert (COMPOSE_DIR / svc["build"]["context"] / svc["build"]["dockerfile"]).is_file()
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy"
        assert svc["env_file"] == ["stormalert.env"]


def test_every_compose_command_is_one_our_cli_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    shards = {}
    for name, svc in our_services().items():
        cmd, ns = parse_command(["stormalert", *map(interpolate, svc["command"])], monkeypatch)
        if cmd == "engine":
            assert ns.shards == SHARDS, name
            shards[name] = ns.shard
        if cmd == "ingest":
            assert ns.shards == SHARDS and ns.feed == "kite"
        test = [interpolate(part) for part in svc["healthcheck"]["test"]]
        assert test[0] == "CMD", f"{name}: health check must run a command, not a shell"
        kind, hc = parse_command(test[1:], monkeypatch)
        # The health check is the process's own --check, on this very process's heartbeat.
        assert (kind, hc.check) == (cmd, True), name
        if cmd == "engine":
            assert hc.shard == ns.shard, name
        if cmd == "ingest":
            assert hc.feed == ns.feed, name
        if cmd == "backtest":
            assert hc.consumer == ns.consumer and ns.shards == SHARDS, name
    assert shards == {f"engine-{i}": i for i in range(SHARDS)}


def test_a_bad_command_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(AssertionError, match="rejects"):
        parse_command(["stormalert", "engine", "--shard", "zero"], monkeypatch)
    with pytest.raises(AssertionError, match="rejects"):
        parse_command(["stormalert", "notify", "--chek"], monkeypatch)
    with pytest.raises(AssertionError, match="not a process command"):
        parse_command(["stormalert", "engines"], monkeypatch)


# Settings --------------------------------------------------------------------------------

def setting_names() -> set[str]:
    names = set()
    for cls in SETTINGS_CLASSES:
        for field, info in cls.model_fields.items():
            names.add(f"STORMALERT_{field.upper()}")
            choices = getattr(info.validation_alias, "choices", [])
            names.update(str(c).upper() for c in choices if str(c).startswith("STORMALERT_"))
    return names


def unknown_settings(text: str) -> set[str]:
    return set(re.findall(r"\bSTORMALERT_[A-Z0-9_]+\b", text)) - setting_names()


def deploy_texts() -> dict[str, str]:
    files = [COMPOSE, COMPOSE_DIR / "stormalert.env.example", DOCKERFILE, HEALTHCHECK,
             *sorted(SYSTEMD.iterdir())]
    texts = {f.name: f.read_text() for f in files}
    readme = (ROOT / "README.md").read_text()
    texts["README.md#deploying"] = readme.partition("## Deploying")[2].partition("\n## ")[0]
    return texts


def test_every_stormalert_variable_in_the_deploy_files_is_a_real_setting() -> None:
    texts = deploy_texts()
    assert texts["README.md#deploying"], "README has no Deploying section"
    named = [re.findall(r"\bSTORMALERT_[A-Z0-9_]+\b", text) for text in texts.values()]
    assert sum(map(len, named)) >= 5  # the scan does find them
    bad = {name: unknown_settings(text) for name, text in texts.items()}
    assert {k: v for k, v in bad.items() if v} == {}
    assert unknown_settings("STORMALERT_ENGINE_SHARDS=2 STORMALERT_SHARDS=2") == {
        "STORMALERT_ENGINE_SHARDS"}


def test_no_secret_is_committed() -> None:
    ignored = (COMPOSE_DIR / ".gitignore").read_text().split()
    assert {"stormalert.env", "secrets/", "letsencrypt/"} <= set(ignored)
    example = (COMPOSE_DIR / "stormalert.env.example").read_text()
    for line in example.splitlines():
        key, _, value = line.partition("=")
        if key.endswith(("TOKEN", "SECRET", "KEY")) and not line.startswith("#"):
            assert value in ("", "CHANGE-ME-to-a-long-random-string"), line


# Dockerfile ------------------------------------------------------------------------------

def test_dockerfile_copies_what_exists_and_installs_the_health_check() -> None:
    text = DOCKERFILE.read_text()
    copies = re.findall(r"^COPY (.+) \S+$", text, flags=re.M)
    sources = [src for line in copies for src in line.split()]
    assert sources, "no COPY found"
    for src in sources:
        assert (ROOT / src).exists(), f"COPY {src}: not in the repository"
    packages = {"proto", "ingest", "engine", "notify", "web", "deploy"}
    assert packages <= set(sources), "the image must contain every package"
    assert "/usr/local/bin/stormalert-healthcheck" in text
    assert 'ENTRYPOINT ["stormalert"]' in text
    assert re.search(r"^USER (?!root)\w+", text, flags=re.M)


# Health check against a real Redis -------------------------------------------------------

def run_check(argv: list[str], url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setenv("STORMALERT_REDIS_URL", url)
    return healthcheck_module().main(argv)


def test_health_check_follows_the_heartbeat(r: redis.Redis, redis_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_check(["engine-0"], redis_url, monkeypatch) == 1  # never beat
    r.set(keys.heartbeat("engine-0"), orjson.dumps({"at": time.time()}), ex=15)
    assert run_check(["engine-0"], redis_url, monkeypatch) == 0
    assert run_check(["--unit", "engine-0"], redis_url, monkeypatch) == 0
    assert run_check(["engine-1"], redis_url, monkeypatch) == 1  # another shard's
    r.set(keys.heartbeat("web"), orjson.dumps({"at": time.time() - 60}), ex=15)
    assert run_check(["web"], redis_url, monkeypatch) == 1  # written, but stale


def test_watchdog_restarts_only_a_dead_process(r: redis.Redis, redis_url: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The watchdog runs the unit's own `stormalert KIND --check` (a real subprocess) and
    restarts the unit only when that fails while Redis is up."""
    module = healthcheck_module()
    restarted: list[str] = []
    monkeypatch.setattr(module, "restart", restarted.append)
    monkeypatch.setenv("STORMALERT_REDIS_URL", redis_url)
    r.set(keys.heartbeat("ingest-kite"), orjson.dumps({"at": time.time()}), ex=15)
    assert module.main(["--unit", "ingest-kite", "--restart"]) == 0
    assert restarted == []
    assert module.main(["--unit", "notify-notify-1", "--restart"]) == 1
    assert restarted == ["stormalert-notify@notify-1.service"]
    # Redis down: the check fails but restarting the process would not help.
    monkeypatch.setenv("STORMALERT_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert module.main(["--unit", "engine-1", "--restart"]) == 1
    assert len(restarted) == 1


def test_unit_instances_map_to_their_check_commands_and_units(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for_unit = healthcheck_module().for_unit
    assert for_unit("engine-3") == (["engine", "--check", "--shard", "3"],
                                    "stormalert-engine@3.service")
    assert for_unit("ingest-upstox") == (["ingest", "--check", "--feed", "upstox"],
                                         "stormalert-ingest@upstox.service")
    assert for_unit("notify-notify-2")[1] == "stormalert-notify@notify-2.service"
    assert for_unit("web-8001")[1] == "stormalert-web@8001.service"
    for spec in ("engine-3", "ingest-upstox", "notify-notify-2", "web-8001"):
        command, _unit = for_unit(spec)
        kind, ns = parse_command(["stormalert", *command], monkeypatch)
        assert (kind, ns.check) == (spec.partition("-")[0], True)
    for bad in ("engine", "engine-", "shard-0"):
        with pytest.raises(ValueError):
            for_unit(bad)


# Redis config ----------------------------------------------------------------------------

def test_redis_conf_starts_a_server_with_aof_and_no_eviction(tmp_path: Path) -> None:
    port = free_port()
    # The container's data dir (the server changes to it while reading the file) and bind
    # address replaced by a temporary dir and loopback; everything else as written.
    conf = (COMPOSE_DIR / "redis.conf").read_text()
    assert re.search(r"^dir /data$", conf, flags=re.M)
    (tmp_path / "redis.conf").write_text(conf.replace("dir /data", f"dir {tmp_path}"))
    proc = subprocess.Popen(
        [find_server_binary(), str(tmp_path / "redis.conf"), "--port", str(port),
         "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                assert time.monotonic() < deadline, "redis did not start on redis.conf"
                time.sleep(0.05)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


# nginx -----------------------------------------------------------------------------------

NGINX_CONF = COMPOSE_DIR / "nginx.conf"


def location_block(text: str, path: str) -> str:
    found = re.search(r"location\s+=\s+" + re.escape(path) + r"\s*\{([^{}]*)\}", text)
    assert found, f"no `location = {path}` block"
    return found.group(1)


def directives(block: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for stmt in re.sub(r"#[^\n]*", "", block).split(";"):
        words = stmt.split()
        if words:
            out.setdefault(words[0], []).append(" ".join(words[1:]))
    return out


def test_nginx_proxies_server_sent_events_unbuffered_and_uncompressed() -> None:
    text = NGINX_CONF.read_text()
    events = directives(location_block(text, "/events"))
    assert events["proxy_buffering"] == ["off"]
    assert events["gzip"] == ["off"]
    assert int(events["proxy_read_timeout"][0].rstrip("s")) >= 3600
    assert events["proxy_pass"] == ["http://web:8000"]
    gzip_types = re.search(r"gzip_types([^;]*);", text)
    assert gzip_types and "text/event-stream" not in gzip_types.group(1)
    # add_header in a location replaces the server's: the headers must be repeated there.
    for header in ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options"):
        assert text.count(f"add_header {header}") == 2, header
    certs = re.findall(r"ssl_certificate(?:_key)?\s+(\S+);", text)
    assert certs and all(c.startswith("/etc/letsencrypt/live/${DOMAIN}/") for c in certs)
    assert "/.well-known/acme-challenge/" in text


@pytest.mark.skipif(shutil.which("nginx") is None or shutil.which("openssl") is None,
                    reason="nginx (and openssl) not installed: `make system-deps` as root "
                           "installs Debian's nginx to run `nginx -t` on the config")
def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    """`nginx -t` on the file as written, but for what only the deployment provides: a
    certificate (self-signed, made here), the domain, and the compose service name `web`
    (nginx resolves upstream names when it loads its config), pointed at loopback."""
    live = tmp_path / "live"
    live.mkdir()
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=example.test", "-keyout", str(live / "privkey.pem"),
                    "-out", str(live / "fullchain.pem")], check=True, capture_output=True)
    shutil.copy(live / "fullchain.pem", live / "chain.pem")
    text = NGINX_CONF.read_text()
    upstreams = re.findall(r"proxy_pass\s+(\S+);", text)
    assert upstreams and set(upstreams) == {"http://web:8000"}
    site = text.replace("/etc/letsencrypt/live/${DOMAIN}", str(live))
    site = site.replace("${DOMAIN}", "example.test")
    site = site.replace("proxy_pass http://web:8000;", "proxy_pass http://127.0.0.1:8000;")
    assert "${" not in site and "web:8000" not in site
    main = tmp_path / "nginx.conf"
    main.write_text(f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n"
                    f"events {{}}\nhttp {{\naccess_log off;\n{site}\n}}\n")
    done = subprocess.run(["nginx", "-t", "-c", str(main), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert "syntax is ok" in done.stderr and "test is successful" in done.stderr
    # And it does check: a broken directive is refused.
    main.write_text(main.read_text().replace("proxy_buffering off;", "proxy_buffering of;", 1))
    done = subprocess.run(["nginx", "-t", "-c", str(main), "-p", str(tmp_path)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and "proxy_buffering" in done.stderr


# systemd ---------------------------------------------------------------------------------

def unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


def test_one_template_per_process_kind_restarting_always_and_hardened() -> None:
    for kind in PROCESS_UNITS:
        u = unit(f"stormalert-{kind}@.service")
        service = u["Service"]
        assert service["Restart"] == "always", kind
        assert service["User"] == "stormalert", kind
        assert service["EnvironmentFile"] == "/etc/stormalert/stormalert.env", kind
        for key in HARDENING:
            assert key in service, f"{kind}: no {key}"
        assert service["NoNewPrivileges"] == "yes"
        assert u["Install"]["WantedBy"] == "multi-user.target"
    timer = unit("stormalert-watchdog@.timer")
    assert timer["Timer"]["OnUnitActiveSec"] and timer["Install"]["WantedBy"] == "timers.target"
    assert unit("stormalert-watchdog@.service")["Service"]["Type"] == "oneshot"


def test_unit_commands_are_ones_our_cli_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    for kind in (*PROCESS_UNITS, "watchdog"):
        command = unit(f"stormalert-{kind}@.service")["Service"]["ExecStart"]
        argv = shlex.split(command.replace("%i", INSTANCES[kind]))
        assert argv[0].startswith("/opt/stormalert/.venv/bin/"), argv
        parsed_kind, ns = parse_command(argv, monkeypatch)
        if kind == "watchdog":
            assert (parsed_kind, ns.unit, ns.restart) == ("healthcheck", "engine-0", True)
        else:
            assert parsed_kind == kind


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="no systemd-analyze: the units are checked by the configparser "
                           "tests only")
def test_systemd_analyze_verifies_every_unit(tmp_path: Path) -> None:
    # The install paths point into this checkout and its virtualenv, so the commands exist.
    for path in SYSTEMD.iterdir():
        text = path.read_text().replace("/opt/stormalert/.venv", sys.prefix)
        (tmp_path / path.name).write_text(text.replace("/opt/stormalert", str(ROOT)))
    for kind, inst in INSTANCES.items():
        suffixes = (".service", ".timer") if kind == "watchdog" else (".service",)
        for suffix in suffixes:
            name = f"stormalert-{kind}@{inst}{suffix}"
            done = subprocess.run(["systemd-analyze", "verify", "--man=no", f"./{name}"],
                                  cwd=tmp_path, capture_output=True, text=True)
            # Unknown keys and bad values are only warnings: any output about our files fails.
            problems = [line for line in done.stderr.splitlines() if "stormalert" in line]
            assert done.returncode == 0 and problems == [], (name, done.stderr)
