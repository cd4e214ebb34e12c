"""Hosts that drive the hooks: the reference host (:mod:`.reference`) and its log reader."""
