"""Settings: one table, env/CLI/file precedence, validation with messages."""

import json

import pytest

from rbridge import settings as s
from rbridge.errors import ConfigError


def test_defaults_match_the_contract():
    cfg = s.load({}, env={})
    assert (str(cfg.models), cfg.host, cfg.port, cfg.workers, cfg.workers_per_core, str(cfg.users),
            cfg.timeout) == ("models", "127.0.0.1", 8000, 5, 1, "users.json", 30.0)


def test_env_then_cli_precedence_and_types(tmp_path):
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"workers": 2, "port": 9001, "max_body": "1M"}))
    cfg = s.load({"port": "9003", "config": str(cfg_file)},
                 env={"RBRIDGE_PORT": "9002", "RBRIDGE_WORKERS_PER_CORE": "3"})
    assert cfg.port == 9003 and cfg.workers == 2 and cfg.workers_per_core == 3 and cfg.max_body == 1 << 20


@pytest.mark.parametrize("cli, env, words", [
    ({}, {"RBRIDGE_WROKERS": "2"}, "RBRIDGE_WROKERS"),
    ({"workers": "0"}, {}, "workers must be at least 1"),
    ({"port": "eighty"}, {}, "--port"),
    ({"certfile": "a.pem"}, {}, "--certfile and --keyfile go together"),
    ({"max_body": "lots"}, {}, "not a size"),
    ({"log_format": "xml"}, {}, "log-format"),
    ({"trusted_proxies": "not-an-ip"}, {}, "trusted-proxies"),
    ({}, {"RBRIDGE_MAX_INFLIGHT_PER_CLIENT": "-1"}, "max-inflight-per-client must not be negative"),
    ({"max_connections_per_client": "-1"}, {}, "max-connections-per-client must not be negative"),
])
def test_bad_settings_are_rejected_with_a_message(cli, env, words):
    with pytest.raises(ConfigError) as err:
        s.load(cli, env=env)
    assert words in str(err.value)


def test_unknown_key_in_config_file_is_rejected(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"workrs": 2}')
    with pytest.raises(ConfigError, match="unknown key"):
        s.load({"config": str(f)}, env={})


def test_settings_are_frozen_and_secret_is_hidden():
    cfg = s.load({}, env={"RBRIDGE_SIGNING_KEY": "x" * 40})
    with pytest.raises(Exception):
        cfg.port = 1
    assert cfg.public()["signing_key"] == "(set)"
    assert "x" * 40 not in json.dumps(cfg.public())


def test_parse_size():
    assert s.parse_size("512M") == 512 << 20 and s.parse_size("2GiB") == 2 << 30 and s.parse_size("100") == 100


def test_kubernetes_service_links_are_not_settings():
    cfg = s.load({}, env={"RBRIDGE_PORT": "tcp://10.0.0.1:8000", "RBRIDGE_SERVICE_HOST": "10.0.0.1",
                          "RBRIDGE_PORT_8000_TCP_ADDR": "10.0.0.1"})
    assert cfg.port == 8000
