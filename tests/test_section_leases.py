"""The network sources' leases: processes on one database ask a source about an address once."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from cowrie_enrich_plugin.record import SectionStatus, SourceSection, utc_now
from cowrie_enrich_plugin.store import open_store
from cowrie_enrich_plugin.store.source_sections import (
    claim_sections,
    get_sections,
    release_sections,
    save_sections,
)
from cowrie_enrich_plugin.testing import GreyNoiseServer, HttpFaults

from .helpers import cowrie_enrich, global_ips, run_ingest, write_log
from .test_greynoise import _greynoise_config, _sensors
from .test_store import _dead_owner

IPS = ["11.0.0.1", "11.0.0.2", "11.0.0.3"]


def _answer(ip: str) -> tuple[str, str, SourceSection]:
    now = utc_now()
    return ip, "gn", SourceSection(SectionStatus.ANSWERED, {"ip": ip}, now, now + dt.timedelta(1))


def test_one_process_at_a_time_holds_a_section_and_its_answer_ends_the_lease(
    db_url: str,
) -> None:
    first, second = open_store(db_url), open_store(db_url)
    try:
        assert claim_sections(first, "gn", IPS, 600) == set(IPS)
        assert claim_sections(second, "gn", IPS, 600) == set()  # leased elsewhere
        assert claim_sections(second, "other", IPS[:1], 600) == {IPS[0]}  # per source
        assert claim_sections(first, "gn", IPS, 600) == set(IPS)  # its own, again
        # a section never asked counts as pending (unfinished) while it is asked
        held = get_sections(first, IPS, ["gn"])
        assert {s["gn"].status for s in held.values()} == {SectionStatus.PENDING}
        save_sections(first, [_answer(IPS[0])])
        save_sections(first, [(IPS[1], "gn", SourceSection(SectionStatus.PENDING, error="x"))])
        # answered: fresh, never leased again; failed: free for whoever asks next
        assert claim_sections(second, "gn", IPS, 600) == {IPS[1]}
        release_sections(first)
        assert claim_sections(second, "gn", IPS, 600) == {IPS[1], IPS[2]}
        assert get_sections(second, IPS, ["gn"])[IPS[0]]["gn"].data == {"ip": IPS[0]}
    finally:
        first.close()
        second.close()


def test_a_lease_that_ran_out_or_whose_holder_here_is_gone_is_taken(db_url: str) -> None:
    gone, late, alive = open_store(db_url), open_store(db_url), open_store(db_url)
    try:
        gone.owner = _dead_owner()
        assert claim_sections(gone, "gn", IPS[:1], 3600) == {IPS[0]}
        assert claim_sections(late, "gn", IPS[1:], 0) == set(IPS[1:])  # runs out at once
        assert claim_sections(alive, "gn", IPS, 600) == set(IPS)
    finally:
        for store in (gone, late, alive):
            store.close()


@pytest.mark.parametrize("sensors", [3, pytest.param(8, marks=pytest.mark.slow)])
def test_sensors_sharing_a_database_ask_greynoise_about_each_address_once(
    server: Any, tmp_path: Path, pg_url: str, sensors: int
) -> None:
    """Records cached before GreyNoise was on lack its section: every sensor that sees
    them asks for it, at once; each address is asked once, and the rerun asks nothing."""
    ips = [ip for ip in global_ips(300, seed=261) if ":" not in ip][:120]
    log = write_log(tmp_path / "cowrie.json", ips)
    without = _greynoise_config(tmp_path, server, GreyNoiseServer(), pg_url)
    before = without.read_text().split("[plugins.enrich.greynoise]")[0]
    without.write_text(before)
    assert run_ingest(log, without).returncode == 0  # whois only
    with GreyNoiseServer(faults=HttpFaults(latency=0.02)) as gn:
        config = _greynoise_config(tmp_path, server, gn, pg_url, rate_per_second=500.0)
        command = [cowrie_enrich(), "ingest", str(log), "--config", str(config)]
        ends = _sensors(command, sensors)
        for end in ends:
            assert end.returncode in (0, 75) and "Traceback" not in end.stderr, end.stderr
        asked = gn.answered()
        assert set(asked) == set(ips) and set(asked.values()) == {1}, asked.most_common(3)
        rerun = run_ingest(log, config)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert sum(gn.answered().values()) == len(ips)
