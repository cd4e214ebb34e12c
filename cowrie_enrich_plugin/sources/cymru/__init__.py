"""Team Cymru bulk whois: the wire protocol (:mod:`.protocol`, no I/O) and the client."""

from typing import Final

__all__ = ["MAX_BACKOFF_SECONDS", "MAX_BATCH_SIZE"]

#: Team Cymru's limit for one bulk request, and ours (here, where the settings read it
#: without loading the protocol).
MAX_BATCH_SIZE: Final = 500
#: The longest pause between two attempts of a whois batch (the client's backoff; the
#: settings' longest batch reads it too).
MAX_BACKOFF_SECONDS: Final = 30.0
