"""The ``classification`` section: who runs an address's network, by the offline feeds.

A section is its JSON text first. The text is what is stored and what two sections
are compared by, and the compiled feed index keeps each section's whole text, so that
classifying an address decodes one string and builds no labels. The labels as values
are parsed from the text only when something asks for them (exporting the record).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .fastjson import json_loads

__all__ = [
    "ENTRY_KEYS",
    "LABEL_KEYS",
    "SECTION_END",
    "Classification",
    "compact_json",
    "entry_text",
    "export_classifications",
    "feed_texts",
    "section_head",
    "section_kinds",
]

logger = logging.getLogger(__name__)

#: A label's keys, in the order the record shows them.
LABEL_KEYS: Final = (
    "feed",
    "kind",
    "provider",
    "prefix",
    "service",
    "region",
    "id",
    "version",
    "fetched_at",
)
#: The keys a feed's entry gives its label (the feed gives the others, the same for
#: all its labels); they follow each other in :data:`LABEL_KEYS`.
ENTRY_KEYS: Final = ("prefix", "service", "region", "id")
_FIRST: Final = LABEL_KEYS.index(ENTRY_KEYS[0])
_LAST: Final = _FIRST + len(ENTRY_KEYS)
if LABEL_KEYS[_FIRST:_LAST] != ENTRY_KEYS or not 0 < _FIRST < _LAST < len(LABEL_KEYS):
    raise ImportError("an entry's keys must be together, between some of its feed's")

#: The one JSON form of a section (compact, UTF-8 kept), made and compared as text.
compact_json: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_EMPTY: Final = '{"kinds":[],"labels":[]}'
_new: Final = object.__new__


def entry_text(values: Sequence[str | None]) -> str:
    """An entry's part of its label's text: its :data:`ENTRY_KEYS`, without braces."""
    return compact_json(dict(zip(ENTRY_KEYS, values, strict=True)))[1:-1]


def feed_texts(feed: Mapping[str, Any]) -> tuple[str, str]:
    """A feed's parts of each of its labels' text: before and after the entry's part.

    ``feed`` holds the label's other keys (``feed``, ``kind``, ...); a label's text is
    ``before + "," + entry_text(...) + "," + after``.
    """
    before = compact_json({key: feed[key] for key in LABEL_KEYS[:_FIRST]})[:-1]
    return before, compact_json({key: feed[key] for key in LABEL_KEYS[_LAST:]})[1:]


#: How a section's text ends, after its labels' texts (joined with ``,``).
SECTION_END: Final = "]}"


def section_head(kinds: Sequence[str]) -> str:
    """A section's text up to its labels: ``section_head(kinds) + labels + SECTION_END``."""
    return f'{{"kinds":{compact_json(list(kinds))},"labels":['


class Classification:
    """Who runs the address's network, by the offline feeds: the ``classification`` section.

    ``labels`` are the feeds' labels (:data:`LABEL_KEYS`); ``kinds`` the sorted set of
    their kinds; ``text`` the section as JSON, as stored. A section made from its text
    (:meth:`from_text`) parses it only when its kinds or labels are asked for.
    """

    __slots__ = ("_damaged", "_kinds", "_labels", "_text")

    def __init__(self, kinds: Sequence[str], labels: Iterable[Mapping[str, Any]]) -> None:
        self._kinds: tuple[str, ...] | None = tuple(kinds)
        self._labels: tuple[Mapping[str, Any], ...] | None = tuple(labels)
        self._text: str | None = None
        self._damaged = False

    @classmethod
    def from_text(cls, text: str, kinds: tuple[str, ...] | None = None) -> Classification:
        """The section as stored (:attr:`text`); ``kinds`` when the maker knows them."""
        made = _new(cls)  # object's: a section is made per listed address classified
        made._kinds = kinds
        made._labels = None
        made._text = text
        made._damaged = False
        return made

    @property
    def kinds(self) -> tuple[str, ...]:
        """The sorted set of the labels' kinds."""
        if self._kinds is None:
            self._parse()
        assert self._kinds is not None
        return self._kinds

    @property
    def labels(self) -> tuple[Mapping[str, Any], ...]:
        """The feeds' labels (shared: :meth:`to_dict` gives copies to change)."""
        if self._labels is None:
            self._parse()
        assert self._labels is not None
        return self._labels

    def _parse(self) -> None:
        if self._text == _EMPTY:  # most addresses: no feed lists them
            self._kinds, self._labels = (), ()
            return
        kinds, labels = self._read()
        self._kinds, self._labels = tuple(kinds), tuple(labels)

    def _read(self) -> tuple[list[str], list[dict[str, Any]]]:
        """The text's kinds and labels, parsed now; none for a damaged text (a stored row)."""
        try:
            data = json_loads(self.text)
            kinds, labels = data["kinds"], data["labels"]
        except (ValueError, KeyError, TypeError, RecursionError):
            kinds = labels = None
        if not (
            isinstance(kinds, list)
            and isinstance(labels, list)
            and all(isinstance(kind, str) for kind in kinds)
            and all(isinstance(label, dict) for label in labels)
        ):
            self._damaged = True
            return [], []
        return kinds, labels

    @property
    def damaged(self) -> bool:
        """Whether the text, once parsed, proved not to be a section (read as no labels)."""
        return self._damaged

    @property
    def text(self) -> str:
        """The section as JSON, as stored."""
        if self._text is None:
            self._text = compact_json({"kinds": self._kinds, "labels": self._labels})
        return self._text

    def same_labels(self, other: Classification) -> bool:
        """Whether ``other`` says the same (their texts compared: nothing parsed)."""
        return self is other or self.text == other.text

    @property
    def listed(self) -> bool:
        """Whether a feed lists the address (most addresses: none does)."""
        return not (self._text == _EMPTY or (self._labels == () and self._kinds == ()))

    def to_dict(self) -> dict[str, Any]:
        """The ``classification`` section of the exported record (the caller's to change)."""
        if not self.listed:
            return {"kinds": [], "labels": []}
        if self._labels is None:  # values parsed now are the caller's: nothing to copy
            kinds, labels = self._read()
            if self._kinds is None:
                self._kinds = tuple(kinds)
            return {"kinds": kinds, "labels": labels}
        return {"kinds": list(self.kinds), "labels": [dict(label) for label in self.labels]}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Classification) and self.same_labels(other)

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"Classification.from_text({self.text!r})"

    def __reduce__(self) -> tuple[Any, tuple[str, tuple[str, ...] | None]]:
        return (Classification.from_text, (self.text, self._kinds))


def section_kinds(section: Classification | Mapping[str, Any] | None) -> Sequence[str]:
    """The kinds of a record's ``classification``: exported, or still a section on its way."""
    if section is None:
        return ()
    if isinstance(section, Classification):
        return section.kinds
    return section["kinds"]  # type: ignore[no-any-return]


def export_classifications(records: Iterable[dict[str, Any]]) -> None:
    """Make each record's ``classification`` still a :class:`Classification` its section.

    The engine sends a listed address's section as it is (it crosses to the host as
    its text, not as labels pickled value by value); the host parses it here, in place.
    """
    for record in records:
        section = record.get("classification")
        if isinstance(section, Classification):
            record["classification"] = section.to_dict()
            if section.damaged:
                logger.warning(
                    "%s: its stored classification is not a section; delivered without labels",
                    record.get("ip"),
                )
