"""One setting checked against its rule: type, range, choices; the message names the key.

The plugin's own keys (:mod:`.config`) and every source's keys
(:class:`.sources.plugin.SourcePlugin.settings`) are checked the same way, from TOML
values and from the text of environment variables alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError

__all__ = ["Setting", "check_value", "value_from_text"]


@dataclass(frozen=True)
class Setting:
    """One key: its type (``str``, ``int``, ``float``, ``bool``), default and limits.

    ``secret`` values (API keys) are never printed, logged or stored.
    """

    kind: type
    default: Any = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()
    secret: bool = False

    def allowed(self) -> str:
        """What the key accepts, in words."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        name = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[
            self.kind
        ]
        if self.low is not None and self.high is not None:
            left = "(" if self.low_open else "["
            name += f" in {left}{_num(self.low)}, {_num(self.high)}]"
        if self.optional:
            name += " (or empty for none)"
        return name


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def check_value(key: str, rule: Setting, value: object, where: str) -> Any:
    """``value`` converted to the rule's type, or :class:`ConfigError` naming ``key``."""
    shown = "'***'" if rule.secret else repr(value)
    problem = f"{where}: {key} = {shown} is not allowed; {key} must be {rule.allowed()}"
    if rule.optional and value in (None, ""):
        return None
    if rule.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(problem)
    elif rule.kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(problem)
    elif rule.kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(problem)
        value = float(value)
        if value != value:  # NaN passes every comparison with a bound
            raise ConfigError(problem)
    elif (
        not isinstance(value, str)
        or not value.strip()
        or value != value.strip()
        or (rule.choices and value not in rule.choices)
    ):
        raise ConfigError(problem)
    if rule.low is not None and rule.high is not None:
        number = float(value)
        too_low = number <= rule.low if rule.low_open else number < rule.low
        if too_low or number > rule.high:
            raise ConfigError(problem)
    return value


def value_from_text(key: str, rule: Setting, text: str, where: str) -> Any:
    """Convert text (an environment variable, a ``cowrie.cfg`` value) to the key's type."""
    value: object = text
    stripped = text.strip()
    if rule.kind is int:
        try:
            value = int(stripped)
        except ValueError:
            value = text
    elif rule.kind is float:
        try:
            value = float(stripped)
        except ValueError:
            value = text
    elif rule.kind is bool:
        value = {"true": True, "yes": True, "1": True, "on": True}.get(
            stripped.lower(), False if stripped.lower() in ("false", "no", "0", "off") else text
        )
    return check_value(key, rule, value, where)
