"""#26: a database password and a GreyNoise key appear nowhere, whatever fails.

Every command runs with a password in the database URL (PostgreSQL here trusts
loopback, so the password is carried and ignored) and a GreyNoise key the server
refuses, then again in the failure modes the suite can provoke: a driver that is not
installed, a database that refuses connections, a configuration that is refused, a
whois server that refuses connections. Every output, the log, the status and metrics
files and the exports are searched for both.
"""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from cowrie_enrich_plugin.testing import BulkWhoisServer, GreyNoiseServer, HttpFaults

from .helpers import clean_env, cowrie_enrich, global_ips, write_config, write_log

PASSWORD = "pw-7c1e9f-secret"
KEY = "GN-KEY-4b8d2a-secret"


def test_no_secret_in_any_output_file_or_export(
    pg_url: str, server: BulkWhoisServer, tmp_path: Path
) -> None:
    url = sa.engine.make_url(pg_url).set(password=PASSWORD).render_as_string(hide_password=False)
    ips = global_ips(20, seed=97)
    log = write_log(tmp_path / "cowrie.json", ips)
    files = tmp_path / "out"
    files.mkdir()
    outputs: list[str] = []
    with GreyNoiseServer(faults=HttpFaults(required_key="another-key")) as gn:
        config = write_config(tmp_path / "host.toml", server, url)
        config.write_text(
            config.read_text()
            + f'\n[plugins.enrich.greynoise]\napi_url = "{gn.url}"\nrate_per_second = 500.0\n'
        )
        env = {**clean_env(), "COWRIE_ENRICH_GREYNOISE_API_KEY": KEY}

        def run(*args: str, db: str | None = None, cfg: Path = config) -> None:
            command = [cowrie_enrich(), *args, "--config", str(cfg), "-vv"]
            command += ["--db", db] if db else []
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            outputs.append(f"{args} -> {done.returncode}\n{done.stdout}{done.stderr}")

        status, metrics = files / "status.json", files / "metrics.prom"
        run("ingest", str(log), "--status-file", str(status), "--metrics-file", str(metrics))
        run("ingest", str(log), "--output", str(files / "records.jsonl"))
        run("lookup", ips[0])
        run("export", "--output", str(files / "export.jsonl"))
        run("export", "--format", "csv", "--output", str(files / "export.csv"))
        run("export", "--format", "ecs", "--output", str(files / "export.ecs.jsonl"))
        run("cache", "stats")
        run("cache", "retry")
        run("cache", "prune")
        run("doctor")
        run("feeds", "status")
        # the failure modes
        missing_driver = url.replace("postgresql+psycopg://", "postgresql+psycopg2://", 1)
        refusing = sa.engine.make_url(url).set(port=1).render_as_string(hide_password=False)
        bad = tmp_path / "bad.toml"
        bad.write_text(
            config.read_text().replace("[plugins.enrich]", "[plugins.enrich]\nbatch_size = 0")
        )
        # each failure on its own: run side by side (they write no file and no table)
        with ThreadPoolExecutor(4) as pool:
            for db in (missing_driver, refusing):
                for args in (("ingest", str(log)), ("cache", "stats"), ("export",), ("doctor",)):
                    pool.submit(run, *args, db=db)
            pool.submit(run, "ingest", str(log), cfg=bad)
            pool.submit(run, "doctor", cfg=bad)
        assert len(outputs) == 21
        server.set_refusing(True)
        run("ingest", str(log), "--status-file", str(status), "--metrics-file", str(metrics))
        run("cache", "retry")
    everything = "\n".join(outputs)
    assert "-> 0" in everything and "refused the key" in everything  # it ran, and was refused
    for secret in (PASSWORD, KEY):
        assert secret not in everything, everything
        for path in files.iterdir():
            assert secret.encode() not in path.read_bytes(), path
    with sa.create_engine(pg_url).connect() as conn:  # nor in the store
        for table in sa.inspect(conn).get_table_names():
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')):
                assert PASSWORD not in str(row) and KEY not in str(row), table
