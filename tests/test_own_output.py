"""Sensors on one database: each output holds its own input's addresses, and is owed
the finished records of those it delivered pending, whichever sensor finishes them."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from cowrie_enrich_plugin.testing import BulkWhoisServer, Faults

from .helpers import clean_env, global_ips, run_ingest, write_config, write_log


def _out(log: Path, config: Path, sensor: str, code: int = 0) -> dict[str, str]:
    done = run_ingest(
        log, config, "--output", "-", env={**clean_env(), "COWRIE_ENRICH_SENSOR": sensor}
    )
    assert done.returncode == code, done.stdout + done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(records) == len({r["ip"] for r in records}), records
    return {r["ip"]: r["status"] for r in records}


def _due_now(db_url: str) -> None:
    """Time passes: every queued address's retry is due."""
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE pending_queue SET next_attempt_at = NULL"))
    engine.dispose()


def test_a_sensor_outputs_its_own_addresses_and_is_owed_what_another_finished(
    tmp_path: Path, db_url: str
) -> None:
    ips = global_ips(11, seed=271)
    mine, theirs, later, shared = ips[:3], ips[3:6], ips[6:9], ips[9:]
    logs = {
        name: write_log(tmp_path / f"{name}.json", found)
        for name, found in (("a", mine), ("b", theirs + mine[:1]), ("c", later + shared))
    }
    with BulkWhoisServer(faults=Faults(refuse=True)) as down, BulkWhoisServer() as up:
        dead = write_config(tmp_path / "dead.toml", down, db_url, retries=1, timeout=2)
        alive = write_config(tmp_path / "alive.toml", up, db_url)
        first = _out(logs["a"], dead, "a", code=75)
        assert first == dict.fromkeys(mine, "pending")
        _due_now(db_url)
        # b resumes the whole queue (a's addresses get asked) but outputs its own input:
        # the one of a's it also saw, not the others
        second = _out(logs["b"], alive, "b")
        assert sorted(second) == sorted(theirs + mine[:1])
        assert "pending" not in second.values()
        asked = sorted(ip for request in up.requests for ip in request.ips)
        assert asked == sorted(theirs + mine)  # each once
        # a's next run, of other addresses, is owed what b finished; then no more
        third = _out(logs["c"], alive, "a")
        assert sorted(third) == sorted(later + shared + mine)
        assert "pending" not in third.values()
        assert _out(logs["c"], alive, "a").keys() == set(later + shared)
        assert _out(logs["c"], alive, "b").keys() == set(later + shared)
        assert sorted(ip for request in up.requests for ip in request.ips) == sorted(
            theirs + mine + later + shared
        )


def test_what_a_gone_sensor_is_owed_is_pruned_after_thirty_days(db_url: str) -> None:
    import datetime as dt

    from cowrie_enrich_plugin.store import open_store
    from cowrie_enrich_plugin.store.owed import OwedRows, drop_unclaimed
    from cowrie_enrich_plugin.store.schema import owed_table

    with open_store(db_url) as store:
        a, b = OwedRows(store, "a"), OwedRows(store, "b")
        a.owe(["192.0.2.1", "192.0.2.2"])
        b.owe(["192.0.2.1"])
        old = (store.now() - dt.timedelta(days=31)).replace(tzinfo=None)
        store.write(
            lambda conn: conn.execute(
                sa.update(owed_table).where(owed_table.c.sensor == "b").values(at=old)
            )
        )
        assert drop_unclaimed(store) == 1
        assert a.all() == {"192.0.2.1", "192.0.2.2"} and b.all() == set()
        assert a.finished() == ["192.0.2.1", "192.0.2.2"]  # not queued: finished
        a.settle(["192.0.2.1"])
        assert a.all() == {"192.0.2.2"}


def test_a_long_lived_run_withholds_only_what_another_sensor_is_owed(tmp_path: Path) -> None:
    """Records come out twice in a long-lived run (early, then with every network
    source's section): a withheld address stays withheld, the host's own never is."""
    from types import SimpleNamespace

    from cowrie_enrich_plugin.engine.own_output import OwnOutput
    from cowrie_enrich_plugin.record import EnrichmentRecord, Status
    from cowrie_enrich_plugin.settings import EnrichConfig
    from cowrie_enrich_plugin.store import open_store
    from cowrie_enrich_plugin.store.owed import OwedRows

    mine, theirs, nobodys, earlier = "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"
    with open_store(f"sqlite:///{tmp_path / 'owed.db'}") as store:
        OwedRows(store, "b").owe([theirs])
        OwedRows(store, "a").owe([earlier])
        enricher = SimpleNamespace(
            config=EnrichConfig(lifecycle="long-lived"),
            network=SimpleNamespace(names=()),
            owed_rows=lambda: OwedRows(store, "a"),
        )
        failures: list[Exception] = []
        own = OwnOutput(enricher, failures.append, lambda: False)  # type: ignore[arg-type]
        assert own.from_host([mine]) == []

        def out(*ips: str) -> list[str]:
            records = [EnrichmentRecord(ip, Status.ENRICHED) for ip in ips]
            return [r.ip for r in own.sift(records)]

        assert out(mine, theirs, nobodys, earlier) == [mine, nobodys, earlier]
        assert out(mine, theirs) == [mine]  # the second delivery of a withheld one too
        assert own.from_host([theirs]) == [theirs]  # the host saw it: looked at again
        assert out(theirs) == [theirs]
        own.owe([{"ip": nobodys, "status": "pending"}])
        own.settle([{"ip": earlier, "status": "enriched"}])
        assert OwedRows(store, "a").all() == {nobodys}
        assert failures == []
