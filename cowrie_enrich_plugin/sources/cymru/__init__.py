"""Team Cymru bulk whois: the wire protocol (:mod:`.protocol`, no I/O) and the client."""
