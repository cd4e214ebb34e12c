"""``cowrie-enrich cowrie-install``: the one step that enables the Cowrie output plugin.

Cowrie imports output plugins only from its own ``cowrie/output/`` folder. This
writes ``enrich.py`` there (one import line), found through the ``cowrie`` package
of the Python that runs this command, and prints the ``cowrie.cfg`` section to add.
Run it with the Python of Cowrie's virtual environment, after installing this
package there (``pip install 'cowrie-enrich-plugin[cowrie]'``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

import click

from .options import Failure, run_command

__all__ = ["MODULE_TEXT", "cowrie_install"]

MODULE_TEXT: Final = (
    '"""cowrie-enrich: enrichment results as cowrie.enrich.result events (see [output_enrich])."""'
    "\n\nfrom cowrie_enrich_plugin.cowrie_output import Output  # noqa: F401\n"
)
SECTION_TEXT: Final = """[output_enrich]
enabled = true
db = sqlite:///var/lib/cowrie/enrich.db
# the same keys as [plugins.enrich]; a source's keys as <source>_<key>, e.g.
# geoip_city = /var/lib/GeoIP/GeoLite2-City.mmdb
# greynoise_api_key = ..."""


@click.command("cowrie-install")
@click.option(
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Cowrie's cowrie/output folder (default: the installed cowrie package's).",
)
@click.option("-v", "--verbose", count=True, hidden=True)
@click.option("-q", "--quiet", is_flag=True, hidden=True)
@run_command
def cowrie_install(output_dir: Path | None, verbose: int, quiet: bool) -> None:
    """Enable the Cowrie output plugin: write cowrie/output/enrich.py and say where.

    \b
    Example (with the Python of Cowrie's virtual environment):
      cowrie-env/bin/cowrie-enrich cowrie-install
    """
    folder = output_dir or _installed_output_folder()
    target = folder / "enrich.py"
    if target.exists() and target.read_text(encoding="utf-8") != MODULE_TEXT:
        raise Failure(f"{target} exists and is not ours; move it away first")
    try:
        target.write_text(MODULE_TEXT, encoding="utf-8")
    except OSError as exc:
        raise Failure(f"cannot write {target}: {exc.strerror}") from exc
    click.echo(f"wrote {target}")
    click.echo("now add to cowrie.cfg (etc/cowrie.cfg) and restart Cowrie:\n")
    click.echo(SECTION_TEXT)


def _installed_output_folder() -> Path:
    spec = importlib.util.find_spec("cowrie.output") if _has_cowrie() else None
    if spec is None or not spec.submodule_search_locations:
        raise Failure(
            "Cowrie is not installed for this Python; run this command with the Python of "
            "Cowrie's virtual environment, or name the folder with --output-dir"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _has_cowrie() -> bool:
    return importlib.util.find_spec("cowrie") is not None
