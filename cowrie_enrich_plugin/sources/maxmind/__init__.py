"""MaxMind GeoIP2 / GeoLite2 offline databases: lookups (:mod:`.lookup`), file checks."""
