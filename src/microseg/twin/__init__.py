"""Live validation: compiled policy loaded into a real kernel, probed with real sockets.

:mod:`microseg.twin.netns` builds hosts, segment switches and a router as Linux network namespaces
(iproute2 ``ip``), loads nftables rulesets into them and runs TCP/UDP probes between them.
"""
