"""address_text / network_text: addresses and networks as text, the same on every Python version (IPv4-mapped
IPv6 as ``::ffff:192.0.2.1``, RFC 5952 section 5; ``str()`` writes ``::ffff:c000:201`` before Python 3.13)."""

from __future__ import annotations

import ipaddress

import pytest

from microseg.ir.intervals import address_text, network_text


@pytest.mark.parametrize(("text", "written"), [
    ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
    ("::FFFF:C000:0201", "::ffff:192.0.2.1"),
    ("::ffff:0:0", "::ffff:0.0.0.0"),
    ("::ffff:192.0.2.1%eth0", "::ffff:192.0.2.1%eth0"),
    ("2001:db8::1", "2001:db8::1"),
    ("::1.2.3.4", "::102:304"),
    ("fe80::1%eth0", "fe80::1%eth0"),
    ("192.0.2.1", "192.0.2.1"),
])
def test_address_text(text: str, written: str) -> None:
    assert address_text(ipaddress.ip_address(text)) == written


@pytest.mark.parametrize(("text", "written"), [
    ("::ffff:0:0/96", "::ffff:0.0.0.0/96"),
    ("::ffff:c000:200/120", "::ffff:192.0.2.0/120"),
    ("::ffff:192.0.2.1/128", "::ffff:192.0.2.1/128"),
    ("::fffe:0:0/95", "::fffe:0:0/95"),  # wider than ::ffff:0:0/96: its network address is not mapped
    ("2001:DB8::/32", "2001:db8::/32"),
    ("::/0", "::/0"),
    ("fe80::%eth0/64", "fe80::%eth0/64"),
    ("192.0.2.0/24", "192.0.2.0/24"),
])
def test_network_text(text: str, written: str) -> None:
    assert network_text(ipaddress.ip_network(text)) == written


def test_network_text_is_str_but_for_ipv4_mapped_addresses() -> None:
    for net in [*ipaddress.ip_network("2001:db8::/29").subnets(new_prefix=32),
                *ipaddress.ip_network("10.0.0.0/22").subnets(new_prefix=24)]:
        assert network_text(net) == str(net)
