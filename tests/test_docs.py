"""The docs' examples run as written: the example host, and the README's host snippet."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cowrie_enrich_plugin.testing import BulkWhoisServer

from .docs_example import run_example_host
from .helpers import global_ips, host_config, write_log

ROOT = Path(__file__).resolve().parents[1]


def test_example_host_in_the_docs(server: BulkWhoisServer, tmp_path: Path) -> None:
    ips = global_ips(1500, seed=77)
    log = write_log(tmp_path / "cowrie.json", [*ips, "10.0.0.1"])
    records = run_example_host(str(log), host_config(server, f"sqlite:///{tmp_path / 'doc.db'}"))
    assert set(records) == {*ips, "10.0.0.1"}
    assert records["10.0.0.1"]["status"] == "skipped"
    assert sum(server.asked().values()) == len(ips)


def test_readme_host_snippet_runs(
    server: BulkWhoisServer, tmp_path: Path, capsys, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    readme = (ROOT / "README.md").read_text()
    snippet = re.search(r"## Using it from a host\n\n```python\n(.*?)```", readme, re.S)
    assert snippet is not None
    host, port = server.address
    code = snippet.group(1).replace(
        '{"plugins": {"enrich": {"db": "sqlite:///enrich.db"}}}',
        json.dumps(
            {
                "plugins": {
                    "enrich": {
                        "db": f"sqlite:///{tmp_path / 'r.db'}",
                        "cymru_host": host,
                        "cymru_port": port,
                    }
                }
            }
        ),
    )
    assert "cymru_port" in code
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert out.startswith("8.8.8.8 ") and server.asked_count("8.8.8.8") == 1
