"""A CMDB export as CSV: one host (VM or bare-metal) per row.

A header row is required. Header names are matched case-insensitively, with spaces and ``-`` read as
``_``; the documented columns and their aliases are:

============  =========================================  =====================================================
column        aliases                                    meaning
============  =========================================  =====================================================
hostname      host, host_name, name, fqdn                workload name (required; unique in the file)
ip            ips, ip_address, ip_addresses, address,    one or several addresses separated by ``;`` or
              addresses                                  spaces (required)
subnet        network, cidr                              the host's subnet (CIDR); every IPv4/IPv6 address
                                                         of the row must lie in it
vlan          vlan_id                                    802.1Q VLAN id, 1-4094
role          function                                   label ``role``
environment   env                                        the workload's environment
owner         team, owned_by                             the workload's owner
compliance    compliance_scope, scope                    compliance scopes separated by ``;`` (lower-cased)
zone          trust_zone, security_zone                  override of the proposed trust zone
sensitivity   data_classification, classification       low, medium, high or restricted
============  =========================================  =====================================================

Any other column is kept as a label (key = the normalised header, value = the cell) so that nothing
the CMDB knows is lost; empty cells add nothing. Two columns whose label keys are the same, or an
unknown column whose key is ``subnet``, ``vlan`` or ``role``, are an error (one would overwrite the
other). ``location`` is the subnet and/or ``vlan <id>``; subnet and VLAN are also labels. Every bad
cell is an :class:`InputError` naming the file, the line and the column; a duplicate hostname, and an
address already given to another host, name the line that used it first (a host with several
addresses lists them all in one row).

Spreadsheet exports are read as they are written: UTF-8 with or without a byte-order mark, UTF-16 with
one, CRLF or LF line ends, quoted cells holding the delimiter or line breaks. The delimiter is ``,``,
``;`` (Excel in locales whose decimal mark is a comma) or a tab, whichever makes the first line a
header naming a hostname and an ip column; an Excel ``sep=<c>`` first line names it. A header that
reads so with two delimiters is an error, never a guess. Columns with an empty header (the empty
columns a spreadsheet exports at the right) are ignored as long as every cell under them is empty. A
quoted cell that is never closed is an error, not the rest of the file read into one cell.
"""

from __future__ import annotations

import codecs
import csv
import io
import ipaddress
import re
from pathlib import Path
from typing import Protocol

from microseg.errors import InputError
from microseg.ir.intervals import address_text, network_text
from microseg.ir.model import AddressBinding, Workload, WorkloadKind
from microseg.sources.inventory.aws_ec2 import safe_label_key
from microseg.sources.inventory.native import Located, NativeResult, sort_networks
from microseg.sources.yamlpos import read_text

__all__ = ["COLUMNS", "is_cmdb_csv", "parse"]

COLUMNS: dict[str, tuple[str, ...]] = {
    "hostname": ("host", "host_name", "name", "fqdn"),
    "ip": ("ips", "ip_address", "ip_addresses", "address", "addresses"),
    "subnet": ("network", "cidr"),
    "vlan": ("vlan_id",),
    "role": ("function",),
    "environment": ("env",),
    "owner": ("team", "owned_by"),
    "compliance": ("compliance_scope", "scope"),
    "zone": ("trust_zone", "security_zone"),
    "sensitivity": ("data_classification", "classification"),
}
_ALIASES = {alias: column for column, aliases in COLUMNS.items() for alias in (column, *aliases)}
_SENSITIVITY = ("low", "medium", "high", "restricted")
# As for EC2 names: no "/" (Kubernetes ns/name) and no ":" (external: peers).
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
_DIGITS = re.compile(r"[0-9]+")  # ASCII: str.isdigit() also takes "²" (which int() refuses) and "١٢"


def _normalise(header: str) -> str:
    return re.sub(r"[\s-]+", "_", header.strip().lower())


def _columns(header: list[str]) -> list[str]:
    return [_ALIASES.get(_normalise(h), _normalise(h)) for h in header]


_DELIMITERS = (",", ";", "\t")
_SEP_LINE = re.compile(r"sep=(.)")  # Excel's hint naming the delimiter, on a line of its own


def _dialect(first: str) -> tuple[list[str], int]:
    """(delimiters for which the header, the first line or the one after an Excel ``sep=`` line, names a
    hostname and an ip column, the number of lines before the header)."""
    hint = _SEP_LINE.fullmatch(first.rstrip("\r\n"))
    if hint:
        return [hint.group(1)], 1
    found = []
    for delimiter in _DELIMITERS:
        columns = _columns(next(csv.reader([first], delimiter=delimiter), []))
        if "hostname" in columns and "ip" in columns:
            found.append(delimiter)
    return found, 0


def _decode_head(head: bytes) -> str:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return head.decode("utf-16", errors="replace")
    return head.decode("utf-8-sig", errors="replace")


def is_cmdb_csv(path: Path) -> bool:
    """Content detection: the first line is a CSV header naming a hostname and an ip column (delimited by
    ``,``, ``;`` or a tab, or after an Excel ``sep=`` line)."""
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    lines = _decode_head(head).splitlines()
    if not lines:
        return False
    delimiters, skip = _dialect(lines[0])
    if skip:
        if len(lines) < 2:
            return False
        columns = _columns(next(csv.reader([lines[1]], delimiter=delimiters[0]), []))
        return "hostname" in columns and "ip" in columns
    return bool(delimiters)


def parse(path: Path, display: str) -> NativeResult:
    text = read_text(path, display)
    first = re.split(r"\r\n|\r|\n", text, maxsplit=1)[0]
    delimiters, skip = _dialect(first)
    if len(delimiters) > 1:
        names = " and ".join(repr(d) for d in delimiters)
        raise InputError(f"the header names a hostname and an ip column with either of {names} as the "
                         "delimiter; add a first line sep=<delimiter> to say which", file=display, line=1)
    stream = io.StringIO(text, newline="")
    if skip:
        stream.readline()
    # strict: a quoted cell never closed is an error, not the rest of the file read into one cell.
    reader = csv.reader(stream, delimiter=delimiters[0] if delimiters else ",", strict=True)
    header_line = 1 + skip
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise InputError("a header row is required", file=display, line=header_line) from exc
    originals = [h.strip() for h in header]
    columns = _columns(header)
    seen: dict[str, str] = {}
    label_keys: dict[str, str] = {}  # label key -> the unknown column that sets it
    for original, column in zip(originals, columns, strict=True):
        if not column:
            continue  # an unnamed column: its cells must be empty (checked on every row)
        if column in seen:
            raise InputError(f"columns {seen[column]!r} and {original!r} both mean {column!r}",
                             file=display, line=header_line, field=original)
        seen[column] = original
        key = "" if column in COLUMNS else safe_label_key("", column)
        if key in ("subnet", "vlan", "role"):
            raise InputError(f"column {original!r} would set label {key!r}, which only the {key!r} column sets",
                             file=display, line=header_line, field=original)
        if key and key in label_keys:
            raise InputError(f"columns {label_keys[key]!r} and {original!r} would both set label {key!r}",
                             file=display, line=header_line, field=original)
        if key:
            label_keys[key] = original
    for required in ("hostname", "ip"):
        if required not in seen:
            raise InputError(f"a header row with a {required!r} column is required", file=display,
                             line=header_line)

    workloads: list[tuple[Workload, Located]] = []
    bindings: list[AddressBinding] = []
    first_line: dict[str, int] = {}
    address_of: dict[str, tuple[str, int]] = {}
    while True:
        start = reader.line_num + 1 + skip
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            message = (f"a quoted cell of the row starting here is never closed ({exc})"
                       if "unexpected end of data" in str(exc) else f"malformed CSV: {exc}")
            raise InputError(message, file=display, line=start) from None
        line = start
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(columns) and not any(cell.strip() for cell in row[len(columns):]):
            row = row[:len(columns)]  # empty cells past the header's last column
        if len(row) != len(columns):
            raise InputError(f"the row has {len(row)} cells, the header {len(columns)}", file=display, line=line)
        for i, (column, cell) in enumerate(zip(columns, row, strict=True)):
            if not column and cell.strip():
                raise InputError(f"{cell.strip()!r} in a column without a header", file=display, line=line,
                                 field=f"column {i + 1}")
        cells = {c: v.strip() for c, v in zip(columns, row, strict=True) if c}

        def error(column: str, message: str, *, _line: int = line) -> InputError:
            return InputError(message, file=display, line=_line, field=seen[column])

        name = cells["hostname"]
        if not _NAME.fullmatch(name):
            raise error("hostname", f"{name!r} is not a valid host name (letters, digits, '.', '_', '-')")
        if name in first_line:
            raise error("hostname", f"host {name!r} is already defined on line {first_line[name]} "
                        "(a host with several addresses lists them all in one row)")
        first_line[name] = line
        workloads.append((_host(cells, error), Located(display, line, seen["hostname"])))
        host = workloads[-1][0]
        for ip in host.addresses:
            if ip in address_of:
                other, other_line = address_of[ip]
                raise error("ip", f"{ip} is already the address of host {other!r} on line {other_line}; "
                            "flows to it could not be attributed")
            address_of[ip] = (name, line)
        bindings.extend(AddressBinding(ip=ip, workload=name, source=f"{display}#host {name}")
                        for ip in host.addresses)
    return NativeResult(tuple(workloads), tuple(bindings), (), ())


class _ErrorAt(Protocol):
    def __call__(self, column: str, message: str) -> InputError: ...


def _host(cells: dict[str, str], error: _ErrorAt) -> Workload:
    ips: list[str] = []
    for raw in re.split(r"[;\s]+", cells["ip"]):
        if not raw:
            continue
        try:
            ips.append(address_text(ipaddress.ip_address(raw)))
        except ValueError:
            raise error("ip", f"{raw!r} is not an IP address") from None
    if not ips:
        raise error("ip", "no IP address")
    labels: dict[str, str] = {}
    location: list[str] = []
    subnet = cells.get("subnet", "")
    if subnet:
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as exc:
            raise error("subnet", f"{subnet!r} is not a subnet: {exc}") from None
        outside = [ip for ip in ips if ipaddress.ip_address(ip).version == net.version
                   and ipaddress.ip_address(ip) not in net]
        if outside:
            # A CMDB that disagrees with itself is a stale row; which half is wrong is a guess.
            raise error("ip", f"{', '.join(outside)} not in subnet {net}")
        labels["subnet"] = network_text(net)
        location.append(network_text(net))
    vlan = cells.get("vlan", "")
    if vlan:
        if not _DIGITS.fullmatch(vlan) or not 1 <= int(vlan) <= 4094:
            raise error("vlan", f"{vlan!r} is not a VLAN id (1-4094)")
        labels["vlan"] = str(int(vlan))
        location.append(f"vlan {int(vlan)}")
    if cells.get("role"):
        labels["role"] = cells["role"]
    sensitivity = cells.get("sensitivity", "").lower() or None
    if sensitivity is not None and sensitivity not in _SENSITIVITY:
        raise error("sensitivity", f"{sensitivity!r} is not one of {', '.join(_SENSITIVITY)}")
    compliance = sorted({c.strip().lower() for c in cells.get("compliance", "").split(";") if c.strip()})
    for column, value in cells.items():
        if column in COLUMNS or not value:
            continue
        key = safe_label_key("", column)
        if key:
            labels[key] = value
    return Workload(
        name=cells["hostname"], kind=WorkloadKind.HOST, labels=labels, addresses=sort_networks(ips),
        environment=cells.get("environment") or None, owner=cells.get("owner") or None,
        zone=cells.get("zone") or None, sensitivity=sensitivity, compliance=tuple(compliance),
        location=" ".join(location) or None)
