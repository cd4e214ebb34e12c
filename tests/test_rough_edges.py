"""What a newcomer meets first: liveness of lease holders, isolation, folders, messages."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pluggy
import pytest
from click.testing import CliRunner

from cowrie_enrich_plugin.cli import main
from cowrie_enrich_plugin.cli.options import parse_cymru
from cowrie_enrich_plugin.config import ConfigError, resolve_config
from cowrie_enrich_plugin.hosts.reference import make_plugin_manager
from cowrie_enrich_plugin.store.leases import make_owner_id, owner_is_dead_here, this_host
from cowrie_enrich_plugin.testing import BulkWhoisServer

from .helpers import (
    clean_env,
    cowrie_enrich,
    feeds_env,
    global_ips,
    host_config,
    write_config,
    write_log,
)

HOST = this_host()


def run(*args: str) -> object:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def stat_of(pid: int) -> tuple[str, str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], fields[19]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_zombie_or_a_reused_pid_is_not_a_live_lease_holder() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while stat_of(child.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.02)
    state, started = stat_of(child.pid)
    assert state == "Z"  # exited, not reaped: the pid still exists
    assert owner_is_dead_here(f"{HOST}/{child.pid}@{started}/abcd1234")
    assert owner_is_dead_here(f"{HOST}/{child.pid}/abcd1234")  # ids without a start time
    child.wait()
    # a live process under a pid whose recorded start time differs: the pid was reused
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        _state, started = stat_of(sleeper.pid)
        assert not owner_is_dead_here(f"{HOST}/{sleeper.pid}@{started}/abcd1234")
        assert owner_is_dead_here(f"{HOST}/{sleeper.pid}@{int(started) - 1}/abcd1234")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not owner_is_dead_here(make_owner_id().replace(HOST, "another-host"))


def test_a_holder_in_another_pid_space_with_the_same_host_name_is_never_judged() -> None:
    """#23 item 10: containers sharing a host name each have a pid 2 of their own."""
    name = socket.gethostname()
    gone = 2**22 + 12345  # no such pid here
    assert owner_is_dead_here(f"{HOST}/{gone}@1/abcd1234")
    assert not owner_is_dead_here(f"{name}#1.{HOST.rsplit('.', 1)[-1]}/{gone}@1/abcd1234")
    assert not owner_is_dead_here(f"{name}/{gone}@1/abcd1234")  # an id of another version


def test_the_worker_runs_the_installed_package_not_the_current_directory(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    planted = tmp_path / "cowrie_enrich_plugin"
    (planted / "engine").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    (planted / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (planted / "engine" / "__init__.py").write_text("")
    (planted / "engine" / "__main__.py").write_text("raise SystemExit(9)\n")
    ips = global_ips(50, seed=131)
    log = write_log(tmp_path / "cowrie.json", ips)
    host, port = server.address

    def ingest(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        command = [cowrie_enrich(), "ingest", str(log), "--db", "sqlite:///i.db"]
        command += ["--cymru", f"{host}:{port}"]
        return subprocess.run(
            command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    done = ingest({**clean_env(), "PYTHONPATH": str(tmp_path)})
    # PYTHONPATH makes the host import the planted package too; the worker must not
    assert done.returncode in (0, 1), done.stdout + done.stderr
    marker.unlink(missing_ok=True)
    done = ingest(clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    assert not marker.exists()


def test_a_folder_without_cowrie_logs_is_reported(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "events.json").write_text('{"src_ip": "8.8.8.8"}\n')
    (folder / "cowrie.log").write_text("not json\n")
    os.mkfifo(folder / "cowrie.json.fifo")
    (folder / "cowrie.json.x").mkdir()
    (folder / "cowrie.json.loop").symlink_to(folder / "cowrie.json.loop")
    done = subprocess.run(
        [cowrie_enrich(), "ingest", str(folder), "--db", f"sqlite:///{tmp_path / 'f.db'}"],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    text = done.stdout + done.stderr
    assert "holds no Cowrie log" in text and "events.json" in text
    assert "cowrie.json.fifo: a FIFO, not a log file" in text
    assert "cowrie.json.x: a directory, not a log file" in text
    assert "cowrie.json.loop: cannot be opened" in text
    assert "Traceback" not in text
    assert done.returncode == 1 and "nothing was read" in text  # a cron job goes red (#26 14)


def test_ipv6_whois_servers_and_the_flag_named_in_messages() -> None:
    assert parse_cymru("[::1]:4343") == ("::1", 4343)
    assert parse_cymru("::1") == ("::1", None)
    assert parse_cymru("whois.example:43") == ("whois.example", 43)
    assert resolve_config({"cymru_host": "::1"}, {}).cymru_host == "::1"
    with pytest.raises(ConfigError, match="cymru_host"):
        resolve_config({"cymru_host": "::1:43:x"}, {})
    result = run("lookup", "8.8.8.8", "--cymru", ":43")
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert "option --cymru:" in result.output and "--cymru-host" not in result.output  # type: ignore[attr-defined]


def test_help_shows_examples_without_markup() -> None:
    for command in (["ingest"], ["lookup"], ["export"], ["cache", "stats"], ["doctor"]):
        output = run(*command, "--help").output  # type: ignore[attr-defined]
        assert "\\b" not in output and "\b" not in output
        assert re.search(r"Example:\n +cowrie-enrich ", output), output


def test_read_only_commands_do_not_create_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    result = run("cache", "stats", "--db", f"sqlite:///{missing}")
    assert result.exit_code == 1 and "no database at" in result.output  # type: ignore[attr-defined]
    assert not missing.exists()
    no_folder = f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}"
    for command in (["cache", "stats"], ["export"], ["ingest", str(tmp_path)], ["doctor"]):
        result = run(*command, "--db", no_folder)
        assert "the directory" in result.output and "does not exist" in result.output, command  # type: ignore[attr-defined]


def test_db_urls_that_are_not_urls_are_usage_errors(tmp_path: Path) -> None:
    result = run("cache", "stats", "--db", "not a url")
    assert result.exit_code == 2 and "db = 'not a url'" in result.output  # type: ignore[attr-defined]
    result = run("cache", "stats", "--db", "nosuch://x/y")
    assert result.exit_code == 2 and "db = " in result.output  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_postgres_scheme_is_read_as_postgresql(pg_url: str) -> None:
    url = pg_url.replace("postgresql+psycopg://", "postgres://", 1)
    result = run("ingest", "-", "--db", url)
    assert "Can't load plugin" not in result.output  # type: ignore[attr-defined]
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]


def test_doctor_applies_the_checks_ingest_applies(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text('[plugins]\nenabled = "enrich"\n')
    doctor = run("doctor", "--config", str(config))
    ingest = run("ingest", "-", "--config", str(config))
    assert doctor.exit_code == 1 and ingest.exit_code == 2  # type: ignore[attr-defined]
    assert "FAIL  config" in doctor.output  # type: ignore[attr-defined]
    # The feeds on and none installed: with enrichment off there is nothing to say of them.
    config.write_text(
        f'[plugins]\nenabled = ["other"]\n[plugins.enrich.feeds]\ndir = "{tmp_path / "feeds"}"\n'
    )
    doctor = run("doctor", "--config", str(config), "--db", f"sqlite:///{tmp_path / 'd.db'}")
    assert "FAIL  config: [plugins] enabled does not list 'enrich'" in doctor.output  # type: ignore[attr-defined]
    ingest = subprocess.run(
        [cowrie_enrich(), "ingest", "-", "--config", str(config)],
        input="",
        env=feeds_env(),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert "enrichment is off" in ingest.stderr
    assert "feed" not in ingest.stderr, ingest.stderr


def test_ending_twice_is_harmless(server: BulkWhoisServer, tmp_path: Path) -> None:
    config = host_config(server, f"sqlite:///{tmp_path / 'e.db'}")
    pm: pluggy.PluginManager = make_plugin_manager(config)
    pm.hook.cowrie_ingest_start(config=config, pluginmanager=pm)
    pm.hook.cowrie_ingest_events(events=[{"src_ip": "8.8.8.8"}])
    first = pm.hook.cowrie_ingest_end()
    assert pm.hook.cowrie_ingest_end() == first


def _in_read_only(
    folder: Path, *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``command`` with ``folder`` read-only for it (root: a read-only bind mount)."""
    if os.geteuid() == 0:
        script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
        argv = ["unshare", "--mount", "sh", "-c", script, str(folder), *command]
    else:
        folder.chmod(0o555)
        argv = list(command)
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=env or clean_env(), check=False
        )
    finally:
        folder.chmod(0o755)


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("unshare") is None, reason="needs unshare as root"
)
def test_a_database_this_user_cannot_read_is_named_with_the_mend(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    """Not "cannot write": the file cannot be read, and the doctor says by whom it can."""
    db = tmp_path / "x.db"
    url = f"sqlite:///{db}"
    ips = global_ips(3, seed=42)
    write_config(config := tmp_path / "c.toml", server, url)
    log = write_log(tmp_path / "a.json", ips)
    args = ["ingest", "-q", "--config", str(config), str(log)]
    first = subprocess.run(
        [cowrie_enrich(), *args], capture_output=True, text=True, env=clean_env()
    )
    assert first.returncode == 0, first.stderr
    db.chmod(0)
    # root reads anything; in a user namespace of its own it is only the file's owner
    prefix = ["unshare", "--user"] if os.geteuid() == 0 else []
    try:
        doctor, stats = (
            subprocess.run(
                [*prefix, cowrie_enrich(), *command, "--db", url],
                capture_output=True,
                text=True,
                timeout=60,
                env=clean_env(),
            )
            for command in (["doctor", "--cymru", server.hostport], ["cache", "stats"])
        )
    finally:
        db.chmod(0o644)
    said = [line for line in doctor.stdout.splitlines() if line.startswith("FAIL  database:")]
    assert doctor.returncode == 1 and len(said) == 1, doctor.stdout + doctor.stderr
    assert f"cannot read {db}" in said[0] and "chmod g+r" in said[0], said
    assert stats.returncode == 1 and f"cannot read {db}" in stats.stderr, stats.stderr
    assert "Traceback" not in doctor.stderr + stats.stderr


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("unshare") is None, reason="needs unshare as root"
)
def test_the_doctor_fails_on_a_file_the_run_could_not_write(tmp_path: Path) -> None:
    """The textfile folder a cron user cannot write is found before the run, not after it."""
    locked, fine = tmp_path / "textfile", tmp_path / "out"
    locked.mkdir()
    fine.mkdir()
    env = {
        **clean_env(),
        "COWRIE_ENRICH_FEEDS_ENABLED": "tor",
        "COWRIE_ENRICH_FEEDS_DIR": str(locked / "feeds"),
    }
    url = f"sqlite:///{fine / 'x.db'}"
    doctor = _in_read_only(
        locked,
        cowrie_enrich(),
        "doctor",
        "--db",
        url,
        "--metrics-file",
        str(locked / "enrich.prom"),
        "--status-file",
        str(tmp_path / "missing" / "status.json"),
        "--output",
        str(fine / "records.jsonl"),
        env=env,
    )
    lines = doctor.stdout.splitlines()
    assert doctor.returncode == 1, doctor.stdout + doctor.stderr
    assert "Traceback" not in doctor.stderr
    metrics = [line for line in lines if str(locked / "enrich.prom") in line]
    assert len(metrics) == 1 and metrics[0].startswith("FAIL  output: cannot write"), lines
    assert "chown" in metrics[0], metrics
    status = [line for line in lines if "status.json" in line]
    assert len(status) == 1 and status[0].startswith("FAIL"), lines
    assert f"mkdir -p {tmp_path / 'missing'}" in status[0], status
    assert f"OK    output: {fine / 'records.jsonl'} can be written" in lines, lines
    feeds = [line for line in lines if line.startswith("WARN  feeds: this user cannot write")]
    assert len(feeds) == 1 and str(locked) in feeds[0], lines
    assert sorted(p.name for p in fine.iterdir()) == []  # the check leaves nothing behind
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(
    os.geteuid() == 0 and shutil.which("unshare") is None, reason="needs unshare as root"
)
def test_a_store_in_a_read_only_folder_is_read_and_never_written(
    server: BulkWhoisServer, tmp_path: Path
) -> None:
    import sqlite3

    folder = tmp_path / "ro"
    folder.mkdir()
    db = folder / "x.db"
    url = f"sqlite:///{db}"
    ips = global_ips(5, seed=41)
    config = tmp_path / "c.toml"
    write_config(config, server, url)
    done = subprocess.run(
        [
            cowrie_enrich(),
            "ingest",
            "-q",
            "--config",
            str(config),
            str(write_log(tmp_path / "a.json", ips)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["x.db"]  # closed: no -wal, no -shm

    exported = _in_read_only(folder, cowrie_enrich(), "export", "--db", url)
    assert exported.returncode == 0, exported.stderr
    assert sorted(json.loads(line)["ip"] for line in exported.stdout.splitlines()) == sorted(ips)
    stats = _in_read_only(folder, cowrie_enrich(), "cache", "stats", "--db", url)
    assert stats.returncode == 0 and "fresh: 5" in stats.stdout, stats.stdout + stats.stderr
    doctor = _in_read_only(folder, cowrie_enrich(), "doctor", "--db", url)
    assert "WARN  database:" in doctor.stdout and "cannot write" in doctor.stdout, doctor.stdout
    pruned = _in_read_only(folder, cowrie_enrich(), "cache", "prune", "--db", url)
    assert pruned.returncode == 1 and "cannot write" in pruned.stderr, pruned.stderr
    assert "Traceback" not in pruned.stderr + doctor.stderr + stats.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["x.db"]

    # A writer holds it open, its latest change only in the -wal file: read, with that change.
    writer = sqlite3.connect(db)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("DELETE FROM enrichment_record WHERE ip = ?", (ips[0],))
    writer.commit()
    assert (folder / "x.db-shm").exists()
    exported = _in_read_only(folder, cowrie_enrich(), "export", "--db", url)
    assert exported.returncode == 0, exported.stderr
    assert len(exported.stdout.splitlines()) == 4

    # That -wal file without its writer's -shm: refused, not read as an older state.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("x.db", "x.db-wal"):
        (copy / name).write_bytes((folder / name).read_bytes())
    writer.close()
    refused = _in_read_only(copy, cowrie_enrich(), "export", "--db", f"sqlite:///{copy / 'x.db'}")
    assert refused.returncode == 1 and "x.db-wal" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_database_without_a_store_is_named_not_read_as_empty(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A mistyped --db that names an existing, empty database: the readers and
    ``cache retry`` say it holds no store and exit 1, creating nothing; doctor says
    the first ingest creates it."""
    import sqlalchemy as sa

    if kind == "postgresql":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'other.db'}"
        sa.create_engine(url).connect().close()  # an empty file
    for command in (["cache", "stats"], ["export"], ["cache", "prune"], ["cache", "retry"]):
        result = run(*command, "--db", url, "--cymru", "127.0.0.1:9")
        output = result.output  # type: ignore[attr-defined]
        assert result.exit_code == 1, (command, output)  # type: ignore[attr-defined]
        assert "holds no cowrie-enrich store" in output and "does not exist" not in output
    assert sa.inspect(sa.create_engine(url)).get_table_names() == []  # nothing created
    doctor = run("doctor", "--db", url, "--cymru", "127.0.0.1:9").output  # type: ignore[attr-defined]
    assert "OK    database:" in doctor and "empty (created on the first ingest)" in doctor
