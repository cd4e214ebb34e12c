"""The enrichment sources: Team Cymru bulk whois (:mod:`.cymru`), MaxMind GeoIP2 (:mod:`.maxmind`)."""
