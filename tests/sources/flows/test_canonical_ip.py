"""canonical_ip: the one address rule of every reader and of the store, written the same on every Python version.

Python 3.13 changed how ``str(IPv6Address)`` writes IPv4-mapped addresses (CPython gh-87799): ``::ffff:1.2.3.4``,
where 3.11 and 3.12 write ``::ffff:102:304``. The store, and everything made from it, must not depend on the
Python version: canonical_ip writes them as RFC 5952 section 5 recommends, ``::ffff:1.2.3.4``, on every one."""

from __future__ import annotations

from pathlib import Path

import pytest

from microseg.engine.store import FlowStore
from microseg.sources.flows import aws_vpc, canonical_ip


@pytest.mark.parametrize(("text", "written"), [
    ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
    ("::FFFF:0102:0304", "::ffff:1.2.3.4"),  # hexadecimal, upper case, leading zeros
    ("0:0:0:0:0:ffff:102:304", "::ffff:1.2.3.4"),
    ("::ffff:0.0.0.0", "::ffff:0.0.0.0"),  # the first of ::ffff:0:0/96
    ("::ffff:ffff:ffff", "::ffff:255.255.255.255"),  # and its last
    ("::ffff:1.2.3.4%eth0", "::ffff:1.2.3.4%eth0"),  # a zone is kept, as for any other IPv6 address
])
def test_ipv4_mapped_addresses_are_written_with_the_dotted_quad(text: str, written: str) -> None:
    assert canonical_ip(text) == written


@pytest.mark.parametrize(("text", "written"), [
    ("2001:db8::1", "2001:db8::1"),
    ("2001:DB8:0::1", "2001:db8::1"),
    ("::1.2.3.4", "::102:304"),  # IPv4-compatible (deprecated), not mapped: hexadecimal on every version
    ("::fffe:102:304", "::fffe:102:304"),  # next to ::ffff:0:0/96, outside it
    ("1:0:0:0:0:ffff:102:304", "1::ffff:102:304"),
    ("64:ff9b::c000:221", "64:ff9b::c000:221"),  # NAT64: str() is the same on every version
    ("10.0.0.1", "10.0.0.1"),
    ("fe80::1%eth0", "fe80::1%eth0"),
])
def test_other_addresses_are_written_as_before(text: str, written: str) -> None:
    assert canonical_ip(text) == written


@pytest.mark.parametrize("text", ["::ffff:1.2.3.04", "::ffff:256.0.0.1", "::ffff:1.2.3.4%", "::ffff:1.2.3.4%a/b",
                                  "::ffff:1.2.3.4/128", "1.2.3.4%eth0"])
def test_the_zone_rule_and_refusals_are_unchanged(text: str) -> None:
    assert canonical_ip(text) is None


def test_a_flow_log_stores_ipv4_mapped_addresses_with_the_dotted_quad(tmp_path: Path) -> None:
    """Every reader's addresses reach the store through canonical_ip (FlowStore._check_addresses): one
    spelling of the address, whatever the log wrote, on every Python version."""
    header = " ".join(aws_vpc.DEFAULT_FIELDS)
    good = "2 123456789010 eni-1 {src} {dst} 40000 443 6 10 1000 1700000000 1700000060 ACCEPT OK"
    path = tmp_path / "mapped.log"
    path.write_text("\n".join([header, good.format(src="::ffff:10.0.0.1", dst="10.0.0.2"),
                               good.format(src="::FFFF:a00:1", dst="10.0.0.2"),
                               good.format(src="10.0.0.2", dst="0:0:0:0:0:ffff:a00:1")]) + "\n")
    with FlowStore(tmp_path / "s" / "flows.duckdb") as store:
        report = store.ingest([path])
        assert (report.lines, report.records, report.bad) == (3, 3, 0)
        got = sorted((r["src_ip"], r["dst_ip"], r["records"]) for r in store.rows())
    assert got == [("10.0.0.2", "::ffff:10.0.0.1", 1), ("::ffff:10.0.0.1", "10.0.0.2", 2)]
