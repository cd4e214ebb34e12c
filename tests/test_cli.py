"""Every command through click's runner and through a real subprocess: exit codes and output."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from cowrie_enrich_plugin.cli import main
from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults
from cowrie_enrich_plugin.testing.whois_server import Row

from .helpers import clean_env, cowrie_enrich, global_ips, write_log
from .mmdb import write_asn, write_city
from .test_logreader import hostile_log


def run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(
        main, list(args), env={"COWRIE_ENRICH_TIMEOUT": "3", **(env or {})}, catch_exceptions=False
    )


def opts(server: BulkWhoisServer, tmp_path: Path) -> list[str]:
    return ["--cymru", server.hostport, "--db", f"sqlite:///{tmp_path / 'cli.db'}"]


def test_ingest_export_stats_round_trip(server: BulkWhoisServer, tmp_path: Path) -> None:
    ips = global_ips(300, seed=4)
    log = write_log(tmp_path / "cowrie.json.gz", [*ips, "192.168.1.1"])
    out = tmp_path / "records.jsonl"
    result = run("ingest", str(log), *opts(server, tmp_path), "--output", str(out))
    assert result.exit_code == 0, result.output
    assert "903 events" in result.output and "300 resolved by whois" in result.output
    delivered = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(delivered) == 301

    exported = run("export", *opts(server, tmp_path))
    assert exported.exit_code == 0
    records = {json.loads(line)["ip"]: json.loads(line) for line in exported.output.splitlines()}
    assert set(records) == set(ips) | {"192.168.1.1"}
    assert records["192.168.1.1"]["status"] == "skipped"

    as_csv = run("export", "--format", "csv", *opts(server, tmp_path))
    rows = list(csv.DictReader(io.StringIO(as_csv.output)))
    assert len(rows) == 301 and rows[0]["ip"]

    stats = run("cache", "stats", *opts(server, tmp_path))
    assert stats.exit_code == 0 and "skipped: 1" in stats.output.replace("  ", "")

    # A second run from cron: nothing asked again.
    server.reset_log()
    again = run("ingest", str(log), *opts(server, tmp_path))
    assert again.exit_code == 0 and server.connections == 0


def test_pending_gives_exit_75_and_cache_retry_resolves(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    log = write_log(tmp_path / "cowrie.json", global_ips(40, seed=8))
    server.set_refusing(True)
    result = run("ingest", str(log), *opts(server, tmp_path), env={"COWRIE_ENRICH_RETRIES": "1"})
    assert result.exit_code == 75, result.output
    assert "40 pending" in result.output and "run again later" in result.output
    server.set_refusing(False)
    retried = run("cache", "retry", *opts(server, tmp_path))
    assert retried.exit_code == 0, retried.output
    assert "40 resolved, 0 still pending" in retried.output
    assert run("cache", "prune", *opts(server, tmp_path)).exit_code == 0


def test_lookup_prints_records_and_refuses_non_addresses(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    city = write_city(tmp_path / "c.mmdb")
    asn = write_asn(tmp_path / "a.mmdb")
    result = run(
        "lookup",
        "81.2.69.142",
        "10.0.0.1",
        *opts(server, tmp_path),
        "--geoip-city",
        str(city),
        "--geoip-asn",
        str(asn),
    )
    assert result.exit_code == 0, result.output
    first, second = (json.loads(line) for line in result.output.splitlines())
    assert (
        first["maxmind"]["city"] == "London"
        and first["cymru"]["asn"] == server.expected("81.2.69.142")["asn"]
    )  # type: ignore[index]
    assert second["status"] == "skipped"
    bad = run("lookup", "8.8.8.8:22", *opts(server, tmp_path))
    assert bad.exit_code == 2 and "port" in bad.output


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--batch-size", "900"], {}, "option --batch-size: batch_size = 900 is not allowed"),
        (
            [],
            {"COWRIE_ENRICH_CONCURRENCY": "zero"},
            "environment variable COWRIE_ENRICH_CONCURRENCY",
        ),
        (["--config", "/nonexistent.toml"], {}, "does not exist"),
        (["--cymru", "host:port"], {}, "HOST:PORT"),
    ],
)
def test_configuration_errors_exit_2_with_the_key(
    tmp_path: Path, args: list[str], env: dict[str, str], needle: str
) -> None:
    log = write_log(tmp_path / "cowrie.json", ["8.8.8.8"])
    result = run("ingest", str(log), "--db", f"sqlite:///{tmp_path / 'x.db'}", *args, env=env)
    assert result.exit_code == 2, result.output
    assert needle in result.output and "Traceback" not in result.output


def test_wrong_geoip_file_and_bad_db_are_advice(tmp_path: Path) -> None:
    log = write_log(tmp_path / "cowrie.json", ["8.8.8.8"])
    asn = write_asn(tmp_path / "asn.mmdb")
    wrong = run(
        "ingest", str(log), "--geoip-city", str(asn), "--db", f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert wrong.exit_code == 2 and "is a GeoLite2-ASN database" in wrong.output
    bad_db = run("export", "--db", f"sqlite:///{tmp_path / 'no' / 'such' / 'x.db'}")
    assert bad_db.exit_code == 1 and "cannot open the database" in bad_db.output


def test_unreadable_input_file_exits_1_and_names_it(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    good = write_log(tmp_path / "cowrie.json", ["8.8.8.8"])
    result = run("ingest", str(good), str(tmp_path / "gone.json"), *opts(server, tmp_path))
    assert result.exit_code == 1 and "gone.json: file not found" in result.output


def test_doctor(server: BulkWhoisServer, tmp_path: Path) -> None:
    city = write_city(tmp_path / "c.mmdb")
    ok = run("doctor", *opts(server, tmp_path), "--geoip-city", str(city))
    assert ok.exit_code == 0, ok.output
    assert "OK    whois" in ok.output and "OK    geoip_city" in ok.output
    server.set_refusing(True)
    bad = run("doctor", *opts(server, tmp_path), "--geoip-asn", str(tmp_path / "missing.mmdb"))
    assert bad.exit_code == 1
    assert "FAIL  whois: cannot reach" in bad.output
    # a missing GeoIP file is a warning, as ingest treats it
    assert "WARN  geoip_asn" in bad.output


def test_every_command_has_help_with_an_example() -> None:
    for command in (["ingest"], ["lookup"], ["export"], ["cache", "stats"], ["doctor"]):
        result = run(*command, "--help")
        assert result.exit_code == 0 and "--db" in result.output
    for command in (
        ["ingest"],
        ["lookup"],
        ["export"],
        ["cache", "stats"],
        ["cache", "prune"],
        ["cache", "retry"],
        ["doctor"],
    ):
        assert "Example" in run(*command, "--help").output


def test_hostile_strings_are_neutralised_on_terminal_and_in_csv(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    nasty = {
        "8.8.8.8": "\x1b[2J\x1b]0;pwned\x07EVIL-AS, US",
        "1.1.1.1": '=HYPERLINK("http://x","click")',
        "9.9.9.9": "+cmd|' /C calc'!A0",
        "4.4.4.4": "@SUM(1+1)",
        "8.8.4.4": '-2+3, "quoted", ' + "L" * 900,
    }
    for ip, name in nasty.items():
        prefix = ".".join(ip.split(".")[:3]) + ".0/24"
        server.set_rows(ip, [Row(64500, ip, prefix, "US", "arin", "2001-01-01", name)])
    log = write_log(tmp_path / "cowrie.json", list(nasty))
    assert run("ingest", str(log), *opts(server, tmp_path)).exit_code == 0
    exported = run("export", *opts(server, tmp_path))
    assert "\x1b" not in exported.output
    stored = {
        json.loads(line)["ip"]: json.loads(line)["cymru"]["as_name"]
        for line in exported.output.splitlines()
    }
    assert stored == nasty  # stored exactly as received
    as_csv = run("export", "--format", "csv", *opts(server, tmp_path)).output
    assert "\x1b" not in as_csv and "\x07" not in as_csv
    for row in csv.DictReader(io.StringIO(as_csv)):
        for column in ("cymru_as_name", "as_name"):
            assert not row[column].startswith(("=", "+", "-", "@")), row[column]


def test_hostile_log_through_a_real_process(tmp_path: Path) -> None:
    log = tmp_path / "cowrie.json"
    expected = hostile_log(log)
    with BulkWhoisServer(
        faults=Faults(reset_rate=0.2, truncate_rate=0.2, garbage_rate=0.05)
    ) as server:
        proc = subprocess.run(
            [
                cowrie_enrich(),
                "ingest",
                str(log),
                "--cymru",
                server.hostport,
                "--db",
                f"sqlite:///{tmp_path / 'h.db'}",
            ],
            env={**clean_env(), "COWRIE_ENRICH_RETRIES": "8"},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"{len(expected)} bad line(s)" in proc.stdout
        for line in sorted(expected)[:10]:
            assert f"cowrie.json:{line}:" in proc.stdout
        assert "... and" in proc.stdout
        # Only canonical, global addresses ever reached the server.
        assert set(server.asked()) == {"8.8.8.8", "1.0.0.1", "4.4.4.4", "2606:4700:4700::1111"}
        assert all(not r.not_addresses for r in server.requests)
    assert "\x1b" not in proc.stdout


def test_module_entry_point_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cowrie_enrich_plugin.cli", "--version"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and "version" in proc.stdout


def test_every_command_as_a_real_process(server: BulkWhoisServer, tmp_path: Path) -> None:
    """What cron runs: the installed script, its exit codes and its output."""
    db = f"sqlite:///{tmp_path / 'proc.db'}"
    common = ["--cymru", server.hostport, "--db", db]
    log = write_log(tmp_path / "cowrie.json", [*global_ips(60, seed=12), "10.9.9.9"])

    def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [cowrie_enrich(), *args],
            env={**clean_env(), **(env or {})},
            capture_output=True,
            text=True,
            timeout=120,
        )

    ingested = cli("ingest", str(log), *common)
    assert ingested.returncode == 0 and "61 records delivered" in ingested.stdout, ingested.stderr
    looked = cli("lookup", "8.8.8.8", *common)
    assert (
        looked.returncode == 0
        and json.loads(looked.stdout)["cymru"]["asn"] == server.expected("8.8.8.8")["asn"]
    )  # type: ignore[index]
    exported = cli("export", *common)
    assert exported.returncode == 0 and len(exported.stdout.splitlines()) == 62
    as_csv = cli("export", "--format", "csv", "--output", str(tmp_path / "x.csv"), *common)
    assert as_csv.returncode == 0 and "62 records written" in as_csv.stdout
    stats = cli("cache", "stats", *common)
    assert stats.returncode == 0 and "enriched" in stats.stdout
    assert cli("cache", "prune", *common).returncode == 0
    assert cli("cache", "retry", *common).stdout.startswith("0 queued")
    doctor = cli("doctor", *common)
    assert doctor.returncode == 0 and "OK    whois" in doctor.stdout
    usage = cli("ingest")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
    bad = cli("ingest", str(log), *common, env={"COWRIE_ENRICH_BATCH_SIZE": "0"})
    assert (
        bad.returncode == 2
        and "COWRIE_ENRICH_BATCH_SIZE" in bad.stderr
        and "Traceback" not in bad.stderr
    )


def test_ingest_reads_stdin(server: BulkWhoisServer, tmp_path: Path) -> None:
    ips = global_ips(30, seed=13)
    log = write_log(tmp_path / "cowrie.json", ips, extra_lines=["not json"])
    proc = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            "-",
            "--cymru",
            server.hostport,
            "--db",
            f"sqlite:///{tmp_path / 's.db'}",
        ],
        input=log.read_bytes(),
        env=clean_env(),
        capture_output=True,
        timeout=120,
    )
    out = proc.stdout.decode()
    assert proc.returncode == 0, out + proc.stderr.decode()
    assert "90 events" in out and "30 records delivered" in out
    assert "<stdin>:91: not JSON" in out


def test_output_is_kept_when_the_run_cannot_start_and_a_link_is_not_written_through(
    tmp_path: Path,
) -> None:
    """#23 item 5 and 17: a database that does not open leaves the last run's output."""
    log = tmp_path / "cowrie.json"
    log.write_text(json.dumps({"src_ip": "10.0.0.1"}) + "\n")
    out = tmp_path / "records.jsonl"
    out.write_text('{"ip": "earlier"}\n')
    failed = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            str(log),
            "--output",
            str(out),
            "--db",
            f"sqlite:///{tmp_path / 'no' / 'such' / 'folder.db'}",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode != 0 and "Traceback" not in failed.stderr
    assert out.read_text() == '{"ip": "earlier"}\n'
    target = tmp_path / "precious"
    target.write_text("do not touch\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    done = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            str(log),
            "--output",
            str(link),
            "--db",
            f"sqlite:///{tmp_path / 'o.db'}",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert target.read_text() == "do not touch\n"
    assert not link.is_symlink() and json.loads(link.read_text())["ip"] == "10.0.0.1"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres:hunter2@127.0.0.1/x",  # a driver not installed
        "mysql://root:hunter2@127.0.0.1/x",
        "postgresql://postgres:hunter2@127.0.0.1:1/x",  # nothing listens there
        "postgresql://postgres:hunter2@127.0.0.1:99999x/x",  # no parser accepts it
        "postgresql://postgres:hun/ter2@127.0.0.1:1/x",  # a / in the password
        "postgresql://postgres:h@un#ter2?x@127.0.0.1:1/x",
    ],
)
@pytest.mark.parametrize("command", ["ingest", "cache stats", "export", "cache prune", "doctor"])
def test_a_database_password_is_never_shown(tmp_path: Path, url: str, command: str) -> None:
    """#26 item 1: in every failure mode of opening the store, the password stays hidden."""
    args = [*command.split(), *(["examples/logs"] if command == "ingest" else [])]
    done = subprocess.run(
        [cowrie_enrich(), *args, "--db", url, "--cymru", "127.0.0.1:1"],
        cwd=Path(__file__).resolve().parents[1],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "hunter2" not in output and "ter2" not in output, output
    assert "Traceback" not in output, output
    assert "***" in output, output


def test_a_corrupt_database_file_is_named_not_a_traceback(tmp_path: Path) -> None:
    """#23 item 12."""
    db = tmp_path / "corrupt.db"
    db.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 64)
    for command in (["cache", "stats"], ["export"], ["cache", "prune"], ["doctor"]):
        done = subprocess.run(
            [cowrie_enrich(), *command, "--db", f"sqlite:///{db}", "--cymru", "127.0.0.1:1"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1, (command, done.stdout + done.stderr)
        assert "Traceback" not in done.stdout + done.stderr
        assert "database" in done.stdout + done.stderr


def test_follow_refuses_a_folder_and_says_it_waits_for_a_missing_file(tmp_path: Path) -> None:
    """#26 item 9."""
    folder = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            "--follow",
            str(tmp_path),
            "--db",
            f"sqlite:///{tmp_path / 'f.db'}",
        ],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert folder.returncode == 2 and "not a folder" in folder.stderr
    assert "Traceback" not in folder.stderr
    missing = subprocess.Popen(
        [
            cowrie_enrich(),
            "ingest",
            "--follow",
            str(tmp_path / "cowrie.json"),
            "--db",
            f"sqlite:///{tmp_path / 'f.db'}",
            "--cymru",
            "127.0.0.1:1",
        ],
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert missing.stderr is not None
    said = missing.stderr.readline()
    missing.terminate()
    missing.communicate(timeout=30)
    assert "does not exist yet; waiting for it" in said
