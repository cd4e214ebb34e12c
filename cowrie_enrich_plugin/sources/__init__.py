"""The enrichment sources: Team Cymru bulk whois (:mod:`.cymru`) and MaxMind GeoIP2."""
