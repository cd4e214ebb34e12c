"""GreyNoise against the loopback server: answers, the rate, Retry-After, quotas, bulk, the key."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.sources.greynoise import SOURCE
from cowrie_enrich_plugin.sources.greynoise.client import GreyNoiseClient
from cowrie_enrich_plugin.testing import GreyNoiseServer, HttpFaults, expected_greynoise

from .conftest import global_ips, write_log
from .e2e.test_processes import clean_env, cowrie_enrich, write_config

FIELDS = ("noise", "riot", "classification", "name", "link", "last_seen")


def client(server: GreyNoiseServer, **settings: Any) -> GreyNoiseClient:
    values = {key: rule.default for key, rule in SOURCE.settings.items()}
    values.update({"api_url": server.url, "retries": 4, "timeout": 5.0, **settings})
    opened = SOURCE.open(values)
    assert isinstance(opened, GreyNoiseClient)
    return opened


def assert_right(ip: str, section: dict[str, Any]) -> None:
    expected = expected_greynoise(ip)
    if expected is None:
        assert section["noise"] is False and section["riot"] is False
        assert section["classification"] is None
    else:
        assert {k: section[k] for k in FIELDS} == {k: expected[k] for k in FIELDS}


def test_community_answers_honour_the_rate_and_retry_after() -> None:
    ips = global_ips(120, seed=201)
    faults = HttpFaults(too_many_rate=0.1, retry_after=0.2)
    with GreyNoiseServer(faults=faults) as server:
        gn = client(server, rate_per_second=20.0)
        result = gn.lookup(ips)
        gn.close()
        assert not result.pending, result.pending
        for ip in ips:
            assert_right(ip, result.answers.get(ip) or result.not_found[ip])
        assert any(r.status == 429 for r in server.requests)
        assert server.max_rate(1.0) <= 20 + 1  # arrival jitter of one request at most
        assert set(server.answered().values()) == {1}  # never asked again after an answer


def test_server_errors_and_bodies_that_are_not_json_are_retried_or_left_pending() -> None:
    ips = global_ips(60, seed=202)
    with GreyNoiseServer(faults=HttpFaults(error_rate=0.2, malformed_rate=0.2)) as server:
        gn = client(server, rate_per_second=500.0, retries=6)
        result = gn.lookup(ips)
        gn.close()
    assert len(result.answers) + len(result.not_found) + len(result.pending) == len(ips)
    assert len(result.pending) < len(ips) // 4
    for ip, section in {**result.answers, **result.not_found}.items():
        assert_right(ip, section)


def test_a_spent_daily_quota_stops_asking_and_leaves_the_rest_pending() -> None:
    ips = global_ips(30, seed=203)
    with GreyNoiseServer(faults=HttpFaults(daily_quota=10)) as server:
        gn = client(server, rate_per_second=500.0)
        result = gn.lookup(ips)
        asked = len(server.requests)
        again = gn.lookup(ips[:5])  # the same day: not asked at all
        gn.close()
        assert asked == 11  # ten answered, one refused for the day
        assert len(server.requests) == asked
    assert len(result.answers) + len(result.not_found) == 10
    assert len(result.pending) == 20 and "quota" in next(iter(result.pending.values()))
    assert set(again.pending) == set(ips[:5])
    # and the operator's own ceiling
    with GreyNoiseServer() as server:
        gn = client(server, rate_per_second=500.0, daily_quota=7)
        result = gn.lookup(ips)
        gn.close()
        assert len(server.requests) == 7 and len(result.pending) == 23


def test_enterprise_bulk_requests_carry_many_addresses() -> None:
    ips = global_ips(10_000, seed=204)
    with GreyNoiseServer(faults=HttpFaults(required_key="k-123")) as server:
        gn = client(
            server, offering="enterprise", api_key="k-123", bulk_size=1000, rate_per_second=50.0
        )
        found: dict[str, Any] = {}
        for start in range(0, len(ips), gn.batch_size):
            result = gn.lookup(ips[start : start + gn.batch_size])
            assert not result.pending
            found.update(result.answers)
            found.update(result.not_found)
        gn.close()
        assert len(server.requests) == math.ceil(len(ips) / 1000) == 10
        assert all(r.method == "POST" and r.had_key for r in server.requests)
    for ip in ips:
        assert_right(ip, found[ip])


def test_only_canonical_global_addresses_are_sent() -> None:
    with GreyNoiseServer() as server:
        gn = client(server, rate_per_second=500.0)
        result = gn.lookup(["10.0.0.1", "8.8.8.8", "08.8.8.8", "192.0.2.1"])
        gn.close()
        assert [r.ips for r in server.requests] == [["8.8.8.8"]]
    assert set(result.pending) == {"10.0.0.1", "08.8.8.8", "192.0.2.1"}


def _greynoise_config(
    tmp_path: Path, whois: Any, gn: GreyNoiseServer, db: str, **greynoise: Any
) -> Path:
    config = write_config(tmp_path / "host.toml", whois, db)
    lines = ["", "[plugins.enrich.greynoise]", f'api_url = "{gn.url}"']
    lines += [
        f'{k} = "{v}"' if isinstance(v, str) else f"{k} = {v!r}" for k, v in greynoise.items()
    ]
    config.write_text(config.read_text() + "\n".join(lines) + "\n")
    return config


@pytest.mark.slow
def test_two_thousand_addresses_with_all_three_sources(server: Any, tmp_path: Path) -> None:
    """Cymru, MaxMind and GreyNoise (20 requests/s, 10 % answered 429): every record has
    all three parts or marks the missing one pending; a second run asks neither server."""
    from .mmdb import write_city

    ips = global_ips(2000, seed=205)
    log = write_log(tmp_path / "cowrie.json", ips)
    city = write_city(tmp_path / "city.mmdb")
    db = f"sqlite:///{tmp_path / 'gn.db'}"
    faults = HttpFaults(too_many_rate=0.1, retry_after=0.1)
    with GreyNoiseServer(faults=faults) as gn:
        config = _greynoise_config(tmp_path, server, gn, db, rate_per_second=20.0)
        out = tmp_path / "records.jsonl"
        command = [cowrie_enrich(), "ingest", str(log), "--config", str(config)]
        command += ["--geoip-city", str(city), "--output", str(out)]
        done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=600)
        assert done.returncode in (0, 75), done.stdout + done.stderr
        records = [json.loads(line) for line in out.read_text().splitlines()]
        assert sorted(r["ip"] for r in records) == sorted(ips)
        for record in records:
            assert record["status"] in ("enriched", "unannounced", "pending")
            assert "maxmind" in record and "cymru" in record
            section = record["greynoise"]
            if not section["pending"]:
                assert_right(record["ip"], section)
        assert sum(r["greynoise"]["pending"] for r in records) < 20
        assert gn.max_rate(1.0) <= 21 and gn.max_rate(5.0) <= 101
        assert max(gn.answered().values()) == 1
        answered = set(gn.answered())
        # the second run: nothing asked of either server, except what was left pending
        server.reset_log()
        gn.reset_log()
        again = subprocess.run(
            command, env=clean_env(), capture_output=True, text=True, timeout=600
        )
        assert again.returncode in (0, 75), again.stdout + again.stderr
        assert not (set(gn.answered()) & answered)
        assert not server.requests or done.returncode == 75


def test_the_api_key_appears_nowhere(server: Any, tmp_path: Path) -> None:
    key = "GN-SECRET-7f3a9c"
    ips = global_ips(40, seed=206)
    log = write_log(tmp_path / "cowrie.json", ips)
    db_file = tmp_path / "key.db"
    db = f"sqlite:///{db_file}"
    with GreyNoiseServer(faults=HttpFaults(required_key=key, error_rate=0.1)) as gn:
        config = _greynoise_config(tmp_path, server, gn, db, rate_per_second=200.0)
        env = {**clean_env(), "COWRIE_ENRICH_GREYNOISE_API_KEY": key}
        outputs = []
        for command in (
            ["ingest", str(log), "-vv", "--output", "-"],
            ["lookup", ips[0], "-vv"],
            ["export", "--format", "csv"],
            ["export"],
            ["cache", "stats"],
            ["doctor", "-vv"],
        ):
            done = subprocess.run(
                [cowrie_enrich(), *command, "--config", str(config)],
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            outputs.append(done.stdout + done.stderr)
        assert all(r.had_key for r in gn.requests)  # it was used
        bad = tmp_path / "bad.toml"
        bad.write_text(
            config.read_text().replace("rate_per_second = 200.0", "rate_per_second = -1")
            + f'api_key = "{key}"\n'
        )
        refused = subprocess.run(
            [cowrie_enrich(), "ingest", str(log), "--config", str(bad)],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs.append(refused.stdout + refused.stderr)
    assert "greynoise" in outputs[0] and "OK    source greynoise" in outputs[5]
    for text in outputs:
        assert key not in text
    assert "rate_per_second = -1" in outputs[-1]  # refused, naming the key it refused
    for path in tmp_path.iterdir():  # the database and whatever else the runs wrote
        if path.is_file() and path.suffix != ".toml":
            assert key.encode() not in path.read_bytes(), path


def test_doctor_and_cache_stats_cover_greynoise(server: Any, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from cowrie_enrich_plugin.cli import main

    db = f"sqlite:///{tmp_path / 's.db'}"
    ips = global_ips(20, seed=207)
    with GreyNoiseServer() as gn:
        config = _greynoise_config(tmp_path, server, gn, db, rate_per_second=500.0)
        log = write_log(tmp_path / "cowrie.json", ips)
        runner = CliRunner()
        assert runner.invoke(main, ["ingest", str(log), "--config", str(config)]).exit_code == 0
        stats = runner.invoke(main, ["cache", "stats", "--config", str(config)]).output
        doctor = runner.invoke(main, ["doctor", "--config", str(config)]).output
    assert "greynoise:" in stats and "answered" in stats
    assert "OK    source greynoise: community API at http://127.0.0.1" in doctor


def test_a_misspelt_source_variable_is_refused() -> None:
    from cowrie_enrich_plugin.config import ConfigError, resolve_config

    with pytest.raises(ConfigError, match="COWRIE_ENRICH_GREYNOISE_APIKEY names no setting"):
        resolve_config({}, {"COWRIE_ENRICH_GREYNOISE_APIKEY": "x"})
