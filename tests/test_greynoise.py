"""GreyNoise against the loopback server: answers, the rate, Retry-After, quotas, bulk, the key."""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.sources.greynoise import SOURCE
from cowrie_enrich_plugin.sources.greynoise.client import GreyNoiseClient
from cowrie_enrich_plugin.testing import (
    BulkWhoisServer,
    Faults,
    GreyNoiseServer,
    HttpFaults,
    expected_greynoise,
)

from .helpers import clean_env, cowrie_enrich, global_ips, run_ingest, write_config, write_log

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
        gn = client(server, rate_per_second=40.0)
        result = gn.lookup(ips)
        gn.close()
        assert not result.pending, result.pending
        for ip in ips:
            assert_right(ip, result.answers.get(ip) or result.not_found[ip])
        assert any(r.status == 429 for r in server.requests)
        assert server.max_rate(1.0) <= 40 + 1  # arrival jitter of one request at most
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


def test_a_bulk_size_above_whois_batches_fills_each_request(tmp_path: Path) -> None:
    """``bulk_size = 1000`` with whois's 500-address batches: requests of 1000, not 500.

    Whois takes its time, so that every address has reached the engine before the first
    answer (a whois idle with nothing waiting asks GreyNoise for what it has).
    """
    ips = global_ips(2300, seed=212)
    log = write_log(tmp_path / "cowrie.json", ips)
    db = f"sqlite:///{tmp_path / 'bulk.db'}"
    with (
        BulkWhoisServer(faults=Faults(latency_per_batch=0.3)) as server,
        GreyNoiseServer(faults=HttpFaults(required_key="k-bulk")) as gn,
    ):
        config = _greynoise_config(
            tmp_path, server, gn, db, offering="enterprise", bulk_size=1000, rate_per_second=50.0
        )
        env = {**clean_env(), "COWRIE_ENRICH_GREYNOISE_API_KEY": "k-bulk"}
        out = tmp_path / "records.jsonl"
        command = [cowrie_enrich(), "ingest", str(log), "--config", str(config)]
        done = subprocess.run(
            [*command, "--output", str(out)], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert sorted(len(r.ips) for r in gn.requests) == [300, 1000, 1000]
    records = {r["ip"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(records) == sorted(ips)
    for ip, record in records.items():
        assert_right(ip, record["greynoise"])


@pytest.mark.slow  # waits out a real flush_interval
def test_a_trickle_is_asked_of_greynoise_once_whois_is_idle(server: Any, tmp_path: Path) -> None:
    """A long-lived host does not hold 30 addresses back until a bulk of 1000 fills up."""
    import os
    import signal

    from .e2e.test_follow import delivered, event, start_follower

    ips = global_ips(30, seed=213)
    live = tmp_path / "cowrie.json"
    live.write_text("")
    out = tmp_path / "records.jsonl"
    db = f"sqlite:///{tmp_path / 'trickle.db'}"
    with GreyNoiseServer(faults=HttpFaults(required_key="k-trickle")) as gn:
        config = _greynoise_config(
            tmp_path, server, gn, db, offering="enterprise", bulk_size=1000, api_key="k-trickle"
        )
        # whois's partial batch goes after flush_interval (20 s); GreyNoise's, once whois
        # is idle, right after it: not at the next flush (40 s), nor when 1000 have gathered
        text = re.sub(r"(?m)^flush_interval = .*$", "", config.read_text())
        config.write_text(text.replace("[plugins.enrich]", "[plugins.enrich]\nflush_interval = 20"))
        proc = start_follower(live, config, "--output", str(out))
        try:
            live.write_text("".join(event(ip, n) + "\n" for n, ip in enumerate(ips)))
            deadline = time.monotonic() + 35
            while time.monotonic() < deadline and proc.poll() is None:
                records = delivered(out)
                if len(records) == len(ips) and not any(
                    r["greynoise"]["pending"]  # type: ignore[index]
                    for r in records.values()
                ):
                    break
                time.sleep(0.2)
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            stdout, stderr = proc.communicate(timeout=30)
        assert proc.returncode == 0, stdout + stderr
        assert [len(r.ips) for r in gn.requests] == [len(ips)]
    for ip, record in delivered(out).items():
        assert_right(ip, record["greynoise"])  # type: ignore[arg-type]


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
        refused = run_ingest(log, bad, timeout=60)
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


def _within(seconds: float, work: Any) -> Any:
    """``work()``'s result; fails if it has not returned after ``seconds`` (a hang)."""
    import threading

    done: list[Any] = []
    thread = threading.Thread(target=lambda: done.append(work()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert done, f"still running after {seconds}s"
    return done[0]


@pytest.mark.parametrize("retry_after", [120.0, 1e9])
def test_a_long_retry_after_leaves_the_rest_pending_without_sleeping(retry_after: float) -> None:
    """#23 item 9: the wait asked for is not slept in this lookup, nor in the next."""
    faults = HttpFaults(too_many_rate=1.0, retry_after=retry_after)
    with GreyNoiseServer(faults=faults) as gn:
        gn_client = client(gn)
        ips = global_ips(5, seed=231)
        first = _within(30, lambda: gn_client.lookup(ips))
        assert set(first.pending) == set(ips) and "wait" in first.pending[ips[0]]
        again = _within(30, lambda: gn_client.lookup(ips))
        assert set(again.pending) == set(ips)
        assert len(gn.requests) == 1  # the second lookup did not ask at all
        gn_client.close()


def test_a_server_that_drips_its_answer_is_bounded_by_the_timeout() -> None:
    with GreyNoiseServer(faults=HttpFaults(drip_seconds=0.2)) as gn:
        gn_client = client(gn, timeout=1.0, retries=2)
        ip = global_ips(1, seed=232)[0]
        result = _within(30, lambda: gn_client.lookup([ip]))
        assert "within 1s" in result.pending[ip]
        gn_client.close()


def test_an_answer_over_the_size_limit_is_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from cowrie_enrich_plugin.sources.greynoise import client as module

    monkeypatch.setattr(module, "MAX_BODY", 1 << 20)
    with GreyNoiseServer(faults=HttpFaults(body_bytes=3 << 20)) as gn:
        gn_client = client(gn, retries=1)
        ip = global_ips(1, seed=233)[0]
        result = gn_client.lookup([ip])
        assert "size limit" in result.pending[ip]
        gn_client.close()


def test_a_server_failing_for_good_opens_the_breaker() -> None:
    """HTTP 503 forever: a few requests, then nothing asked; every section pending."""
    with GreyNoiseServer(faults=HttpFaults(error_rate=1.0)) as gn:
        gn_client = client(gn, retries=3, rate_per_second=100.0)
        ips = global_ips(40, seed=234)
        result = _within(60, lambda: gn_client.lookup(ips))
        assert set(result.pending) == set(ips)
        assert len(gn.requests) == 5  # the breaker's threshold, not 3 per address
        assert gn_client.breaker.opened == 1
        gn_client.close()


def test_fields_of_the_wrong_type_are_stored_as_null() -> None:
    with GreyNoiseServer(faults=HttpFaults(wrong_types=True)) as gn:
        gn_client = client(gn, rate_per_second=100.0)
        seen = [ip for ip in global_ips(40, seed=235) if expected_greynoise(ip) is not None][:3]
        result = gn_client.lookup(seen)
        for ip in seen:
            answer = result.answers[ip]
            assert answer["noise"] is None and answer["riot"] is None
            assert answer["classification"] is None and answer["name"] is None
            assert answer["last_seen"] is None
        gn_client.close()


@pytest.mark.parametrize(
    "faults",
    [HttpFaults(latency=30.0), HttpFaults(too_many_rate=1.0, retry_after=1e9)],
    ids=["hanging", "retry-after-1e9"],
)
def test_a_sick_greynoise_costs_its_own_section_only(
    server: Any, tmp_path: Path, faults: HttpFaults
) -> None:
    """#23 item 8: the enrich filter gets whois's part at once; the end keeps its bound."""
    import time

    from .e2e.test_enrich_filter import start_filter

    ips = global_ips(40, seed=236)
    with GreyNoiseServer(faults=faults) as gn:
        config = _greynoise_config(
            tmp_path, server, gn, f"sqlite:///{tmp_path / 'h.db'}", timeout=60.0
        )
        config.write_text(
            config.read_text().replace(
                "[plugins.enrich.greynoise]", "shutdown_timeout = 3\n[plugins.enrich.greynoise]", 1
            )
        )
        proc, out = start_filter("--hold", "2", "--config", str(config))
        assert proc.stdin is not None
        proc.stdin.write("".join(json.dumps({"src_ip": ip}) + "\n" for ip in ips).encode())
        proc.stdin.flush()
        records = [json.loads(out.next(10)[0])["enrich"] for _ in ips]
        proc.stdin.close()
        ended = time.monotonic()
        proc.wait(timeout=30)
        took = time.monotonic() - ended
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    assert took < 3 + 2, took  # shutdown_timeout
    answered = [r for r in records if r["status"] != "pending"]
    assert len(answered) == len(ips), [r["status"] for r in records]
    for record in answered:
        assert record["cymru"]["asn"] == server.expected(record["ip"])["asn"]
        assert record["greynoise"]["pending"]


@pytest.mark.parametrize(
    ("section", "said"),
    [
        ('api_url = "http://127.0.0.1:99999"', "port is not a number"),
        ('api_url = "http://gnuser:hunter2@127.0.0.1:1"', "credentials do not belong"),
        ('api_key = "GN-KEY-1\\r\\nX-Injected: 1"', "line breaks"),
    ],
)
def test_doctor_fails_on_unusable_greynoise_settings_without_quoting_them(
    server: Any, tmp_path: Path, section: str, said: str
) -> None:
    """#23 item 16: no crash, no credential printed, no OK for a key with CRLF."""
    config = write_config(tmp_path / "host.toml", server, f"sqlite:///{tmp_path / 'd.db'}")
    config.write_text(config.read_text() + f"\n[plugins.enrich.greynoise]\n{section}\n")
    done = subprocess.run(
        [cowrie_enrich(), "doctor", "--config", str(config)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert "Traceback" not in output
    assert said in output and "FAIL" in output, output
    assert "hunter2" not in output and "gnuser" not in output and "GN-KEY-1" not in output
    assert done.returncode != 0


def test_an_infinite_retry_after_holds_asking_back_a_day_at_most() -> None:
    from cowrie_enrich_plugin.sources.greynoise.client import _LONGEST_HOLD, RateLimit

    with GreyNoiseServer(faults=HttpFaults(too_many_rate=1.0, retry_after=math.inf)) as gn:
        gn_client = client(gn)
        result = _within(30, lambda: gn_client.lookup(global_ips(2, seed=237)))
        assert len(result.pending) == 2
        assert gn_client.rate._next - time.monotonic() <= _LONGEST_HOLD
        gn_client.close()
    slow = RateLimit(1 / 120)  # slower than a minute a request: still one at a time
    assert slow.wait(max(60.0, slow.interval)) and not slow.wait(60.0)


def test_a_rate_limited_trial_closes_the_breaker(monkeypatch: pytest.MonkeyPatch) -> None:
    """After an outage, the first request answered 429 shows a live server: asking resumes."""
    from cowrie_enrich_plugin import clock

    now = [1000.0]

    def advance(seconds: float) -> None:
        now[0] += seconds

    monkeypatch.setattr(clock, "monotonic", lambda: now[0])
    monkeypatch.setattr(clock, "sleep", advance)
    with GreyNoiseServer(faults=HttpFaults(error_rate=1.0)) as gn:
        gn_client = client(gn, retries=1, rate_per_second=100.0)
        gn_client.lookup(global_ips(5, seed=235))  # five 503s in a row: open
        assert gn_client.breaker.is_open
        advance(61.0)
        gn.faults = HttpFaults(too_many_rate=1.0, retry_after=1.0)
        limited = gn_client.lookup(global_ips(1, seed=236))  # the trial meets 429s
        assert "429" in next(iter(limited.pending.values()))
        gn.faults = HttpFaults()
        ips = global_ips(3, seed=237)
        answered = gn_client.lookup(ips)  # at once: not held back another cooldown
        assert set(answered.answers) | set(answered.not_found) == set(ips)
        assert not gn_client.breaker.is_open
        gn_client.close()


def test_a_refused_key_is_said_once_counted_and_not_asked_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ips = global_ips(6, seed=210)
    with GreyNoiseServer(faults=HttpFaults(required_key="the-right-one")) as server:
        gn = client(server, api_key="a-wrong-one", rate_per_second=500.0)
        with caplog.at_level("ERROR"):
            first = gn.lookup(ips[:3])
            again = gn.lookup(ips[3:])
        gn.close()
        assert len(server.requests) == 1  # the first refusal holds every later request back
    assert first.refusal == again.refusal == "GreyNoise refused the key (401)"
    assert set(first.pending) | set(again.pending) == set(ips)
    said = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(said) == 1 and "COWRIE_ENRICH_GREYNOISE_API_KEY" in said[0]
    assert "a-wrong-one" not in said[0]


def _ingest_and_doctor(
    log: Path, config: Path, env: dict[str, str]
) -> list[subprocess.CompletedProcess[str]]:
    """``ingest`` of ``log``, then ``doctor``, with ``config`` and ``env``."""
    return [
        subprocess.run(
            [cowrie_enrich(), *command, "--config", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        for command in (["ingest", str(log)], ["doctor"])
    ]


def test_a_refused_key_fails_the_run_and_the_doctor(server: Any, tmp_path: Path) -> None:
    ips = global_ips(5, seed=211)
    log = write_log(tmp_path / "cowrie.json", ips)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    key = "GN-WRONG-51c2"
    with GreyNoiseServer(faults=HttpFaults(required_key="GN-RIGHT")) as gn:
        config = _greynoise_config(tmp_path, server, gn, db, rate_per_second=500.0)
        env = {**clean_env(), "COWRIE_ENRICH_GREYNOISE_API_KEY": key}
        ingest, doctor = runs = _ingest_and_doctor(log, config, env)
    assert ingest.returncode == 1, ingest.stdout + ingest.stderr
    assert "GreyNoise refused the key (401)" in ingest.stderr
    assert "greynoise: 1 request(s), 5 section(s) left pending" in ingest.stdout + ingest.stderr
    assert doctor.returncode != 0
    assert "FAIL  source greynoise" in doctor.stdout and "refused the key (401)" in doctor.stdout
    for run in runs:
        assert key not in run.stdout + run.stderr


def test_ipv6_addresses_are_not_sent_to_the_community_api() -> None:
    v6 = "2a00:1450:4001:81b::200e"
    with GreyNoiseServer() as server:
        gn = client(server, rate_per_second=500.0)
        result = gn.lookup([v6, "8.8.8.8"])
        gn.close()
        assert [r.ips for r in server.requests] == [["8.8.8.8"]]
    assert result.not_found[v6] == dict.fromkeys(FIELDS)  # says nothing, asked again never
    assert v6 not in result.pending
    with GreyNoiseServer() as server:  # the enterprise API takes both families
        gn = client(server, offering="enterprise", api_key="k", rate_per_second=500.0)
        gn.lookup([v6])
        gn.close()
        assert [r.ips for r in server.requests] == [[v6]]


def test_greynoise_without_its_extra_says_what_to_install(server: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "site"
    (blocker / "httpx").mkdir(parents=True)  # first on the path, in the worker too
    (blocker / "httpx" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'httpx'\", name='httpx')\n"
    )
    log = write_log(tmp_path / "cowrie.json", global_ips(3, seed=212))
    with GreyNoiseServer() as gn:
        config = _greynoise_config(tmp_path, server, gn, f"sqlite:///{tmp_path / 'x.db'}")
        env = {**clean_env(), "PYTHONPATH": str(blocker)}
        ingest, doctor = _ingest_and_doctor(log, config, env)
    hint = "pip install 'cowrie-enrich-plugin[greynoise]'"
    assert ingest.returncode == 2 and hint in ingest.stderr, ingest.stderr
    assert "Traceback" not in ingest.stderr
    assert doctor.returncode != 0 and hint in doctor.stdout, doctor.stdout


def _sensors(command: list[str], count: int) -> list[subprocess.CompletedProcess[str]]:
    """``count`` processes of ``command`` started together; their ends."""
    procs = [
        subprocess.Popen(
            command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(count)
    ]
    ends = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        ends.append(subprocess.CompletedProcess(command, proc.returncode, out, err))
    return ends


@pytest.mark.parametrize("sensors", [1, pytest.param(8, marks=pytest.mark.slow)])
def test_the_daily_quota_is_one_for_every_process_on_the_database(
    server: Any, tmp_path: Path, pg_url: str, sensors: int
) -> None:
    """``daily_quota = 100``, counted in the store: ``sensors`` processes at once, then a
    rerun the same day, make 100 requests in all; the spent quota is said and exits 75."""
    ips = [ip for ip in global_ips(400, seed=251) if ":" not in ip][:300]
    log = write_log(tmp_path / "cowrie.json", ips)
    with GreyNoiseServer() as gn:
        config = _greynoise_config(
            tmp_path, server, gn, pg_url, rate_per_second=500.0, daily_quota=100
        )
        command = [cowrie_enrich(), "ingest", str(log), "--config", str(config)]
        first = _sensors(command, sensors)
        assert len(gn.requests) == 100, [e.stderr for e in first]
        again = _sensors(command, 1)
        assert len(gn.requests) == 100
    for end in (*first, *again):
        assert end.returncode == 75, end.stdout + end.stderr
        assert "its daily quota is spent" in end.stdout + end.stderr, end.stdout + end.stderr
        assert "Traceback" not in end.stderr


def test_a_spent_quota_is_reported_whatever_order_calls_side_by_side_end_in() -> None:
    """A call that began before the quota ran out and ends after it asked, and says
    nothing of the quota: the run still reports the quota spent (it said it was not)."""
    from cowrie_enrich_plugin.engine.network import NetworkSources
    from cowrie_enrich_plugin.sources.plugin import Lookup

    ips = global_ips(12, seed=214)
    with GreyNoiseServer(faults=HttpFaults(daily_quota=5)) as server:
        gn = client(server, rate_per_second=500.0)
        real_lookup = gn.lookup
        late: list[Lookup] = []
        gn.lookup = lambda batch: late.pop() if late else real_lookup(batch)  # type: ignore[method-assign]
        sources = NetworkSources({"greynoise": gn})
        try:
            sources.ask({"greynoise": ips[:10]})
            assert gn.quota_spent() and sources.spent() == ("greynoise",)
            late.append(Lookup(answers={ips[10]: {"ip": ips[10]}}, requests=1))
            sources.ask({"greynoise": ips[10:11]})
            assert sources.spent() == ("greynoise",)
        finally:
            sources.close()


def test_sections_a_failing_greynoise_left_pending_make_a_batch_run_exit_75(
    server: Any, tmp_path: Path
) -> None:
    """Whois answered everything, GreyNoise nothing: the addresses are not done."""
    ips = global_ips(6, seed=215)
    log = write_log(tmp_path / "cowrie.json", ips)
    db = f"sqlite:///{tmp_path / 'fail.db'}"
    with GreyNoiseServer(faults=HttpFaults(error_rate=1.0)) as gn:
        config = _greynoise_config(tmp_path, server, gn, db, rate_per_second=500.0, retries=1)
        command = [cowrie_enrich(), "ingest", str(log), "--config", str(config)]
        done = subprocess.run(command, env=clean_env(), capture_output=True, text=True, timeout=120)
        assert gn.requests
    said = done.stdout + done.stderr
    assert done.returncode == 75, said
    assert "0 pending" in said and "section(s) of network sources still pending" in said, said
    assert "Traceback" not in said


def test_a_spent_quota_leaves_the_pending_rows_alone_until_the_day_turns(
    server: Any, tmp_path: Path
) -> None:
    """A rerun the same day asks nothing and rewrites none of the sections left pending."""
    import sqlite3

    ips = [ip for ip in global_ips(40, seed=216) if ":" not in ip][:20]
    db_path = tmp_path / "quota.db"
    with GreyNoiseServer() as gn:
        config = _greynoise_config(
            tmp_path, server, gn, f"sqlite:///{db_path}", rate_per_second=500.0, daily_quota=5
        )
        first = run_ingest(write_log(tmp_path / "first.json", ips), config)
        assert first.returncode == 75 and len(gn.requests) == 5, first.stdout + first.stderr

        def pending_rows() -> list[tuple[Any, ...]]:
            with sqlite3.connect(db_path) as conn:
                return conn.execute(
                    "SELECT ip, attempts, updated_at FROM source_answer"
                    " WHERE status = 'pending' ORDER BY ip"
                ).fetchall()

        before = pending_rows()
        assert len(before) == 15
        other = global_ips(41, seed=216)[-1]
        again = run_ingest(write_log(tmp_path / "again.json", [other]), config)
        said = again.stdout + again.stderr
        assert again.returncode == 75 and "its daily quota is spent" in said, said
        assert len(gn.requests) == 5
    after = [row for row in pending_rows() if row[0] != other]
    assert after == before
