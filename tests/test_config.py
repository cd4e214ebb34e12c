"""The [plugins.enrich] section: defaults, validation, environment and flag precedence."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cowrie_enrich_plugin.config import (
    DEFAULTS,
    ConfigError,
    load_host_config,
    plugin_enabled,
    resolve_config,
)


def test_defaults_match_the_design() -> None:
    config = resolve_config({}, {})
    # every installed feed is on by default; the rest is DEFAULTS
    assert config.feeds.enabled[:3] == ("aws", "google", "azure")
    assert len(config.feeds.enabled) >= 12
    assert dataclasses.replace(config, feeds=DEFAULTS.feeds) == DEFAULTS
    assert (config.batch_size, config.concurrency, config.timeout, config.retries) == (
        500,
        2,
        30.0,
        4,
    )
    assert (config.cymru_host, config.cymru_port, config.db) == (
        "whois.cymru.com",
        43,
        "sqlite:///cowrie-enrich.db",
    )
    assert (config.ttl_days, config.negative_ttl_hours, config.flush_interval) == (30.0, 24.0, 5.0)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"batch_size": 501},
            r"batch_size = 501 is not allowed; batch_size must be an integer in \[1, 500\]",
        ),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": "500"}, "batch_size must be an integer"),
        ({"concurrency": True}, "concurrency"),
        ({"timeout": 0}, r"timeout must be a number in \(0, 600\]"),
        ({"retries": 2.5}, "retries"),
        ({"cymru_port": 70000}, "cymru_port"),
        ({"cymru_host": "whois.cymru.com:43"}, "bare host"),
        ({"cymru_host": ""}, "cymru_host"),
        ({"bogus": 1}, "unknown key 'bogus'; known keys: batch_size"),
    ],
)
def test_bad_values_are_refused_by_name(section: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve_config(section, {})


def test_precedence_defaults_file_env_flags() -> None:
    section = {"batch_size": 100, "concurrency": 3, "geoip_city": "/x.mmdb"}
    env = {"COWRIE_ENRICH_BATCH_SIZE": "200", "COWRIE_ENRICH_TIMEOUT": "7.5", "UNRELATED": "1"}
    flags = {"batch_size": 300, "db": None}
    config = resolve_config(section, env, flags)
    assert (config.batch_size, config.concurrency, config.timeout) == (300, 3, 7.5)
    assert config.geoip_city == "/x.mmdb" and config.db == DEFAULTS.db


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match="environment variable COWRIE_ENRICH_RETRIES"):
        resolve_config({}, {"COWRIE_ENRICH_RETRIES": "many"})
    with pytest.raises(ConfigError, match="COWRIE_ENRICH_BATCHSIZE names no setting"):
        resolve_config({}, {"COWRIE_ENRICH_BATCHSIZE": "10"})
    resolve_config({}, {"COWRIE_ENRICH_CONFIG": "/etc/x.toml"})  # reserved, not a key


def test_flag_errors_name_the_option() -> None:
    with pytest.raises(ConfigError, match="option --batch-size"):
        resolve_config({}, {}, {"batch_size": 9000})


def test_optional_paths_may_be_empty() -> None:
    assert resolve_config({"geoip_city": ""}, {}).geoip_city is None


def test_password_is_masked() -> None:
    config = resolve_config({"db": "postgresql+psycopg://u:s3cret@db/x"}, {})
    assert "s3cret" not in str(config.as_dict())


def test_host_config_file(tmp_path: Path) -> None:
    path = tmp_path / "host.toml"
    path.write_text('[plugins]\nenabled = ["other"]\n[plugins.enrich]\nbatch_size = 10\n')
    config = load_host_config(path)
    assert not plugin_enabled(config)
    assert plugin_enabled({}) and plugin_enabled({"plugins": {"enabled": ["enrich"]}})
    path.write_text("[plugins\n")
    with pytest.raises(ConfigError, match=r"host.toml is not valid TOML.*line 1"):
        load_host_config(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_host_config(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="list of plugin names"):
        plugin_enabled({"plugins": {"enabled": "enrich"}})


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            '[plugins.enrihc]\ndb = "x"\n',
            r"\[plugins.enrihc\] names no installed plugin; did you mean 'enrich'",
        ),
        (
            "[plugin.enrich]\nbatch_size = 10\n",
            r"\[plugin\] at the top level is not read; did you mean \[plugins.enrich\]",
        ),
        (
            'db = "sqlite:///x.db"\n[plugins.enrich]\n',
            r"db = \.\.\. at the top level is not read; settings of the enrichment go under \[plugins.enrich\]",
        ),
        (
            '[plugins]\nenabled = ["enrch"]\n',
            r"\[plugins\] enabled = \['enrch'\] names no installed plugin; did you mean 'enrich'",
        ),
        ('[plugins]\ndb = "x"\n', r"\[plugins\] db is not read"),
        (
            "[plugins.Enrich]\nbatch_size = 10\n",
            r"\[plugins.Enrich\] names no installed plugin; did you mean 'enrich'",
        ),
    ],
)
def test_a_setting_where_nothing_reads_it_is_refused(tmp_path: Path, text: str, said: str) -> None:
    path = tmp_path / "host.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"host.toml: {said}"):
        load_host_config(path)


def test_a_plugin_not_installed_here_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "host.toml"
    path.write_text(
        '[database]\nurl = "x"\n[plugins]\nenabled = ["enrich", "geo"]\n'
        "[plugins.geo]\nx = 1\n[plugins.enricher]\ny = 2\n"
    )
    with caplog.at_level("WARNING"):  # another host's tables, plugins not installed here
        assert load_host_config(path)["plugins"]["geo"] == {"x": 1}
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 4, said
    assert "[database] at the top level is not read here" in said[0]
    assert all("names no installed plugin" in line for line in said[1:])


def test_cowrie_section_names_the_host_keys_among_the_known() -> None:
    from cowrie_enrich_plugin.config import section_from_strings

    with pytest.raises(
        ConfigError, match=r"unknown key 'resultformat'; known keys: .*result_format"
    ):
        section_from_strings(
            {"resultformat": "ecs"}, "[output_enrich]", ("enabled", "result_format")
        )
