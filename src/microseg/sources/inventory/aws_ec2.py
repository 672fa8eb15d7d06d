"""AWS EC2 inventories: ``aws ec2 describe-instances`` and ``aws ec2 describe-network-interfaces`` JSON.

Field meanings follow the EC2 API reference, whose shapes the CLI prints unchanged:
Instance (https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_Instance.html),
InstanceNetworkInterface (.../API_InstanceNetworkInterface.html), NetworkInterface
(.../API_NetworkInterface.html), InstanceState (.../API_InstanceState.html) and Tag
(.../API_Tag.html).

Instances (``{"Reservations": [{"Instances": [...]}]}``):

- one ``host`` workload per instance. Its name is the ``Name`` tag when that tag is a valid workload
  name (letters, digits, ``.``, ``_``, ``-``; no ``/`` or ``:`` so that it can pose neither as a
  Kubernetes ``ns/name`` nor as an ``external:`` peer) *and* no other instance of the same file carries
  the same ``Name``; otherwise the instance id. Tag values are not unique in EC2, so two instances
  named ``web`` both fall back to their ids rather than being merged into one workload. A name that
  still collides with a workload of another file or source is an error (the loader's uniqueness check),
  never a merge.
- addresses: every private IPv4 (``PrivateIpAddresses``) and IPv6 (``Ipv6Addresses``) address of every
  attached ENI, plus the instance's primary ``PrivateIpAddress`` and ``Ipv6Address``. Public IPv4 addresses
  (``Association.PublicIp``) are NAT-ed by the internet gateway to the private address, so they never
  appear in east-west flow logs and are not bound; an instance that has one is marked internet-facing
  (``exposure: internet``) with the address as the reason, because the internet can reach it as far
  as its security groups allow.
- labels: tags whose key is (case-insensitively) ``Tier`` or ``Role`` become ``tier``/``role``;
  ``Env``/``Environment`` become the workload's ``environment``; every tag is also kept as
  ``aws-tag/<key>`` (see :func:`safe_label_key`); security groups become ``aws-sg/<group-id>:
  <group-name>``; the instance id is ``aws/instance-id``. ``location`` is ``<vpc-id>/<subnet-id>``;
  the IAM instance profile ARN, when present, is the workload's ``identity`` (a cloud role).
- instances in state ``terminated`` hold no addresses any more (their private IPs return to the
  subnet and may already belong to someone else), so they are skipped and counted in the notes.
- prefixes delegated to an ENI (``Ipv4Prefixes``, ``Ipv6Prefixes``) are not bound (a binding is one
  address; the addresses in them are usually Kubernetes pods', which the Kubernetes inventory binds);
  they are counted in the notes.

Network interfaces (``{"NetworkInterfaces": [...]}``):

- an ENI attached to an instance (``Attachment.InstanceId``) is skipped and counted: its addresses
  come from ``describe-instances``, which embeds every attached ENI, and binding them here too could
  bind one address to two names.
- a ``branch`` ENI (EKS security groups for pods) is one pod's, associated with its node's trunk ENI
  rather than attached: skipped and counted, the Kubernetes inventory names the pod. Binding it here
  would merge every pod's branch ENI into one workload, since all carry the same description.
- the other ENIs belong to AWS-managed services. Such an ENI is identified when it is
  ``RequesterManaged`` or its ``InterfaceType`` is not plain ``interface`` (``nat_gateway``,
  ``vpc_endpoint``, ``lambda``, ``network_load_balancer``, ...), and becomes a ``managed-service``
  workload named by :func:`service_name` from its ``Description``. Unidentifiable ENIs (a detached
  customer ENI, say) are skipped and counted: guessing an owner would attribute flows wrongly.
  ENIs with the same derived name are the same service (an ALB has one ENI per availability zone,
  each described ``ELB app/<name>/<id>``) and become one workload with all their addresses.

Either file: the output of one ``aws ec2`` call, which the CLI prints whole, every page merged into one
document. A ``NextToken`` in it means it is one page (``--max-items``, ``--no-paginate``) and is refused:
the other pages' hosts would be missing. Addresses must be of the field's version (an IPv4 in
``PrivateIpAddress``, an IPv6 in ``Ipv6Address``), public IPs valid addresses, ``NetworkInterfaceId``
unique, and one address held by two instances or services of the file is an error naming both holders
and paths. Addresses are global: two VPCs that reuse one private range (common across accounts and
environments) cannot be told apart in a flow log line by address, so when the two holders are in different
VPCs the error says so and asks for one inventory per VPC, rather than attributing one host's flows to the
other (across files the loader refuses the same address the same way, naming both).
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter, defaultdict
from dataclasses import dataclass

from microseg.errors import InputError
from microseg.ir.intervals import address_text
from microseg.ir.model import AddressBinding, Workload, WorkloadKind
from microseg.sources.inventory.native import Located, NativeResult, sort_networks
from microseg.sources.yamlpos import Document, NodePath, format_path

__all__ = ["AwsResult", "is_aws_ec2", "parse", "safe_label_key", "service_name"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# Kubernetes label-name syntax (63 characters, alphanumeric at both ends) so that a tag key can be a
# selector key in every back end; other characters become "-".
_KEY_BAD = re.compile(r"[^A-Za-z0-9._-]+")


def is_aws_ec2(data: object) -> bool:
    """A JSON document printed by ``describe-instances`` or ``describe-network-interfaces``: a top-level
    ``Reservations`` or ``NetworkInterfaces`` key (whose value :func:`parse` checks is a list, so that a
    malformed export is an error rather than a file read as nothing)."""
    return (isinstance(data, dict) and "apiVersion" not in data
            and ("Reservations" in data or "NetworkInterfaces" in data))


def safe_label_key(prefix: str, key: str) -> str:
    """``prefix/<key>`` (just the key when ``prefix`` is empty) with the key reduced to Kubernetes
    label-name syntax; empty when nothing is left."""
    name = _KEY_BAD.sub("-", key.strip()).strip("-._")[:63].rstrip("-._")
    if not name:
        return ""
    return f"{prefix}/{name}" if prefix else name


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")


# Descriptions AWS writes on the ENIs it creates for a service, with the name they give. The
# identifier in the description is the service's own (load balancer, NAT gateway, endpoint, function).
_SERVICE_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"ELB (?:app|net|gwy)/([^/\s]+)/([0-9a-f]+)"), "elb-{0}-{1}"),
    (re.compile(r"ELB ([^/\s]+)"), "elb-{0}"),  # Classic Load Balancer: "ELB <name>"
    (re.compile(r"Interface for NAT Gateway (nat-[0-9a-f]+)"), "{0}"),
    (re.compile(r"VPC Endpoint Interface (vpce-[0-9a-f]+)"), "{0}"),
    (re.compile(r"AWS Lambda VPC ENI-(.+)"), "lambda-{0}"),
)


def service_name(description: str, interface_type: str, eni_id: str) -> str:
    """The workload name of a managed-service ENI; deterministic from the ENI's own fields.

    Known descriptions give the service's identifier (``elb-<name>-<id>``, ``nat-...``, ``vpce-...``,
    ``lambda-<function>``). RDS describes every ENI as ``RDSNetworkInterface`` without naming the
    database, so RDS ENIs are named ``rds-<eni-id>``: two databases must never share a name. Any other
    description becomes ``aws-<slug of description>``; with no description, ``<interface-type>-<eni-id>``.
    """
    text = description.strip()
    for pattern, template in _SERVICE_PATTERNS:
        m = pattern.fullmatch(text)
        if m:
            return _slug(template.format(*m.groups()))[:253].strip("-.")
    if text == "RDSNetworkInterface":
        return f"rds-{eni_id}"
    if text and _slug(text):
        return f"aws-{_slug(text)}"[:253].strip("-.")
    return _slug(f"{interface_type}-{eni_id}")


@dataclass(frozen=True)
class AwsResult:
    result: NativeResult
    notes: tuple[str, ...]


class _Reader:
    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.paths: dict[tuple[str, str], NodePath] = {}  # (binding source, ip) -> where the address is
        self.vpcs: dict[str, str] = {}  # binding source -> its VpcId ("" when the export has none)

    def at(self, path: NodePath) -> Located:
        return Located(self.doc.file, self.doc.line_of(path), format_path(path))

    def error(self, path: NodePath, message: str) -> InputError:
        return self.at(path).error(message)

    def get(self, obj: dict[str, object], path: NodePath, key: str, kind: type, default: object = None) -> object:
        value = obj.get(key, default)
        if value is None:
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.error((*path, key), f"{key} should be a {_KIND_NAMES[kind]}, not {type(value).__name__}")
        return value

    def text(self, obj: dict[str, object], path: NodePath, key: str) -> str:
        value = self.get(obj, path, key, str, "")
        assert isinstance(value, str)
        return value

    def objects(self, obj: dict[str, object], path: NodePath, key: str) -> list[tuple[NodePath, dict[str, object]]]:
        items = self.get(obj, path, key, list, [])
        assert isinstance(items, list)
        out = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise self.error((*path, key, i), f"{key}[{i}] should be an object")
            out.append(((*path, key, i), item))
        return out

    def obj(self, obj: dict[str, object], path: NodePath, key: str) -> dict[str, object]:
        value = self.get(obj, path, key, dict, {})
        assert isinstance(value, dict)
        return value

    def ip(self, obj: dict[str, object], path: NodePath, key: str, version: int | None = None) -> str | None:
        value = self.text(obj, path, key)
        if not value:
            return None
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            raise self.error((*path, key), f"{value!r} is not an IP address") from None
        if version is not None and ip.version != version:
            raise self.error((*path, key), f"{value!r} is not an IPv{version} address")
        return address_text(ip)


_KIND_NAMES: dict[type, str] = {str: "string", list: "list", dict: "object", int: "number", bool: "boolean"}


@dataclass
class _Attrs:
    """What instances and service ENIs share: addresses, labels, security groups, public IPs."""

    addresses: dict[str, NodePath]
    labels: dict[str, str]
    public: list[str]
    prefixes: int = 0


def _tags(r: _Reader, obj: dict[str, object], path: NodePath, key: str) -> tuple[dict[str, str], dict[str, str]]:
    """(tags as given, the same tags under lower-cased keys); keys differing only in case must agree."""
    tags: dict[str, str] = {}
    lower: dict[str, str] = {}
    for tpath, tag in r.objects(obj, path, key):
        k, v = r.text(tag, tpath, "Key"), r.text(tag, tpath, "Value")
        if not k:
            raise r.error((*tpath, "Key"), "a tag without a key")
        if k.lower() in lower and lower[k.lower()] != v:
            raise r.error((*tpath, "Key"), f"tags {k!r} and another spelling of it disagree "
                          f"({v!r} vs {lower[k.lower()]!r})")
        tags[k], lower[k.lower()] = v, v
    return tags, lower


def _tag_labels(r: _Reader, tags: dict[str, str], lower: dict[str, str], path: NodePath) -> dict[str, str]:
    labels = {k: lower[k] for k in ("tier", "role") if lower.get(k)}
    for k, v in sorted(tags.items()):
        key = safe_label_key("aws-tag", k)
        if not key:
            continue  # a key of punctuation only: nothing a selector could name
        if key in labels and labels[key] != v:
            raise r.error(path, f"tags {k!r} and another key both become label {key!r} with different values")
        labels[key] = v
    return labels


def _environment(r: _Reader, lower: dict[str, str], path: NodePath) -> str | None:
    env, environment = lower.get("env"), lower.get("environment")
    if env and environment and env != environment:
        raise r.error(path, f"tags Env={env!r} and Environment={environment!r} disagree")
    return environment or env or None


def _public(r: _Reader, obj: dict[str, object], path: NodePath, attrs: _Attrs) -> None:
    """The public IPv4 of ``obj.Association.PublicIp``, if any."""
    public = r.ip(r.obj(obj, path, "Association"), (*path, "Association"), "PublicIp", 4)
    if public:
        attrs.public.append(public)


def _interface(r: _Reader, eni: dict[str, object], path: NodePath, attrs: _Attrs) -> None:
    for ppath, priv in r.objects(eni, path, "PrivateIpAddresses"):
        ip = r.ip(priv, ppath, "PrivateIpAddress", 4)
        if ip:
            attrs.addresses.setdefault(ip, (*ppath, "PrivateIpAddress"))
        _public(r, priv, ppath, attrs)
    for vpath, v6 in r.objects(eni, path, "Ipv6Addresses"):
        ip = r.ip(v6, vpath, "Ipv6Address", 6)
        if ip:
            attrs.addresses.setdefault(ip, (*vpath, "Ipv6Address"))
    for key, field, version in (("Ipv4Prefixes", "Ipv4Prefix", 4), ("Ipv6Prefixes", "Ipv6Prefix", 6)):
        for ppath, prefix in r.objects(eni, path, key):
            text = r.text(prefix, ppath, field)
            try:
                net = ipaddress.ip_network(text)
            except ValueError:
                raise r.error((*ppath, field), f"{text!r} is not a prefix") from None
            if net.version != version:
                raise r.error((*ppath, field), f"{text!r} is not an IPv{version} prefix")
            attrs.prefixes += 1
    # Instances nest security groups under "Groups", network interfaces too (GroupIdentifier).
    for gpath, group in r.objects(eni, path, "Groups"):
        gid = r.text(group, gpath, "GroupId")
        if gid:
            attrs.labels[safe_label_key("aws-sg", gid)] = r.text(group, gpath, "GroupName")


def parse(doc: Document) -> AwsResult:
    r = _Reader(doc)
    data = doc.data
    assert isinstance(data, dict)
    for key in ("Reservations", "NetworkInterfaces"):
        if key in data and not isinstance(data[key], list):
            raise r.error((key,), f"{key} should be a list, not {type(data[key]).__name__}")
    if r.text(data, (), "NextToken"):
        raise r.error(("NextToken",), "the file is one page of the output (NextToken is set, as --max-items or "
                      "--no-paginate leave it): the other pages' hosts would be missing; export without them")
    notes: list[str] = []
    workloads: list[tuple[Workload, Located]] = []
    bindings: list[AddressBinding] = []
    if "Reservations" in data:
        _instances(r, data, workloads, bindings, notes)
    if "NetworkInterfaces" in data:
        _interfaces(r, data, workloads, bindings, notes)
    _one_holder(r, bindings)
    return AwsResult(NativeResult(tuple(workloads), tuple(bindings), (), ()), tuple(notes))


def _one_holder(r: _Reader, bindings: list[AddressBinding]) -> None:
    """An address bound to two workloads of the file is an error naming both (the loader would refuse it
    too, without a line)."""
    holder: dict[str, AddressBinding] = {}
    for b in bindings:
        first = holder.setdefault(b.ip, b)
        if first.workload != b.workload:
            vpc, first_vpc = r.vpcs.get(b.source, ""), r.vpcs.get(first.source, "")
            # Private ranges are reused across VPCs (and accounts); addresses here are global, so the
            # two cannot be told apart in a flow log line: refused, saying why, never one of them picked.
            reuse = (f"; {b.workload} is in {vpc}, {first.workload} in {first_vpc}: VPCs that reuse one private "
                     "range cannot share an inventory, plan each with its own" if vpc and first_vpc and vpc != first_vpc
                     else "")
            raise r.error(r.paths[b.source, b.ip], f"{b.workload} ({b.source.split('#', 1)[1]}): "
                          f"{b.ip} is also the address of {first.workload} "
                          f"({first.source.split('#', 1)[1]}, {format_path(r.paths[first.source, first.ip])}, "
                          f"line {r.doc.line_of(r.paths[first.source, first.ip])}); flows to it could not be "
                          f"attributed{reuse}")


def _instances(r: _Reader, data: dict[str, object], workloads: list[tuple[Workload, Located]],
               bindings: list[AddressBinding], notes: list[str]) -> None:
    instances: list[tuple[NodePath, dict[str, object]]] = []
    for rpath, reservation in r.objects(data, (), "Reservations"):
        instances.extend(r.objects(reservation, rpath, "Instances"))
    terminated, prefixes = 0, 0
    live: list[tuple[NodePath, dict[str, object], str]] = []
    for path, inst in instances:
        iid = r.text(inst, path, "InstanceId")
        if not iid or not _NAME.fullmatch(iid):
            raise r.error((*path, "InstanceId"), f"instance without a valid InstanceId ({iid!r})")
        if r.text(r.obj(inst, path, "State"), (*path, "State"), "Name") == "terminated":
            terminated += 1
            continue
        live.append((path, inst, iid))
    name_tags: dict[str, str] = {}
    for path, inst, iid in live:
        tags, _ = _tags(r, inst, path, "Tags")
        if _NAME.fullmatch(tags.get("Name", "")):
            name_tags[iid] = tags["Name"]
    counts = Counter(name_tags.values())
    for path, inst, iid in live:
        tags, lower = _tags(r, inst, path, "Tags")
        name = name_tags[iid] if iid in name_tags and counts[name_tags[iid]] == 1 else iid
        attrs = _Attrs({}, {"aws/instance-id": iid}, [])
        attrs.labels.update(_tag_labels(r, tags, lower, (*path, "Tags")))
        primary = r.ip(inst, path, "PrivateIpAddress", 4)
        if primary:
            attrs.addresses[primary] = (*path, "PrivateIpAddress")
        primary6 = r.ip(inst, path, "Ipv6Address", 6)
        if primary6:
            attrs.addresses[primary6] = (*path, "Ipv6Address")
        public = r.ip(inst, path, "PublicIpAddress", 4)
        if public:
            attrs.public.append(public)
        for npath, eni in r.objects(inst, path, "NetworkInterfaces"):
            _interface(r, eni, npath, attrs)
        for gpath, group in r.objects(inst, path, "SecurityGroups"):
            gid = r.text(group, gpath, "GroupId")
            if gid:
                attrs.labels[safe_label_key("aws-sg", gid)] = r.text(group, gpath, "GroupName")
        vpc, subnet = r.text(inst, path, "VpcId"), r.text(inst, path, "SubnetId")
        location = "/".join(p for p in (vpc, subnet) if p) or None
        profile = r.text(r.obj(inst, path, "IamInstanceProfile"), (*path, "IamInstanceProfile"), "Arn") or None
        workloads.append((_workload(name, WorkloadKind.HOST, attrs, location, profile,
                                    _environment(r, lower, (*path, "Tags")), r.doc.file),
                          r.at((*path, "InstanceId"))))
        source = f"{r.doc.file}#instance {iid}"
        r.vpcs[source] = vpc
        bindings.extend(AddressBinding(ip=ip, workload=name, source=source) for ip in attrs.addresses)
        r.paths.update(((source, ip), at) for ip, at in attrs.addresses.items())
        prefixes += attrs.prefixes
    if terminated:
        notes.append(f"{r.doc.file}: {terminated} terminated instance(s) skipped")
    _prefix_note(r, prefixes, notes)


def _prefix_note(r: _Reader, prefixes: int, notes: list[str]) -> None:
    if prefixes:
        notes.append(f"{r.doc.file}: {prefixes} prefix(es) delegated to network interfaces not bound "
                     "(flows from addresses in them are attributed only if another inventory binds them)")


def _workload(name: str, kind: WorkloadKind, attrs: _Attrs, location: str | None, identity: str | None,
              environment: str | None, file: str) -> Workload:
    public = sorted(set(attrs.public))
    return Workload(
        name=name, kind=kind, labels=attrs.labels, addresses=sort_networks(list(attrs.addresses)),
        location=location, identity=identity, environment=environment,
        exposure="internet" if public else "internal",
        exposure_reason=f"public IP {', '.join(public)} in {file}" if public else "")


def _interfaces(r: _Reader, data: dict[str, object], workloads: list[tuple[Workload, Located]],
                bindings: list[AddressBinding], notes: list[str]) -> None:
    on_instances, unidentified, branches, prefixes = 0, 0, 0, 0
    services: dict[str, list[tuple[NodePath, dict[str, object], str]]] = defaultdict(list)
    ids: dict[str, NodePath] = {}
    for path, eni in r.objects(data, (), "NetworkInterfaces"):
        eni_id = r.text(eni, path, "NetworkInterfaceId")
        if not eni_id:
            raise r.error((*path, "NetworkInterfaceId"), "network interface without a NetworkInterfaceId")
        if eni_id in ids:
            raise r.error((*path, "NetworkInterfaceId"), f"{eni_id} is listed twice (first at "
                          f"{format_path(ids[eni_id])}, line {r.doc.line_of(ids[eni_id])})")
        ids[eni_id] = path
        if r.text(r.obj(eni, path, "Attachment"), (*path, "Attachment"), "InstanceId"):
            on_instances += 1
            continue
        itype = r.text(eni, path, "InterfaceType") or "interface"
        if itype == "branch":
            branches += 1
            continue
        managed = r.get(eni, path, "RequesterManaged", bool, False)
        if not managed and itype == "interface":
            unidentified += 1
            continue
        name = service_name(r.text(eni, path, "Description"), itype, eni_id)
        if not _NAME.fullmatch(name):
            unidentified += 1
            continue
        services[name].append((path, eni, eni_id))
    for name in sorted(services):
        enis = services[name]
        attrs = _Attrs({}, {}, [])
        locations: set[tuple[str, str]] = set()
        env: set[str] = set()
        for path, eni, eni_id in enis:
            tags, lower = _tags(r, eni, path, "TagSet")
            attrs.labels.update(_tag_labels(r, tags, lower, (*path, "TagSet")))
            found = _environment(r, lower, (*path, "TagSet"))
            if found:
                env.add(found)
            attrs.labels["aws/interface-type"] = r.text(eni, path, "InterfaceType") or "interface"
            own = _eni_ips(r, eni, path)
            for ip, at in own.items():
                attrs.addresses.setdefault(ip, at)
            _public(r, eni, path, attrs)
            _interface(r, eni, path, attrs)
            if attrs.labels["aws/interface-type"] == "nat_gateway":
                # A NAT gateway's public IP serves outbound connections only; "external services
                # cannot initiate a connection" through it
                # (https://docs.aws.amazon.com/vpc/latest/userguide/vpc-nat-gateway.html).
                attrs.public.clear()
            locations.add((r.text(eni, path, "VpcId"), r.text(eni, path, "SubnetId")))
            source = f"{r.doc.file}#network interface {eni_id}"
            r.vpcs[source] = r.text(eni, path, "VpcId")
            bindings.extend(AddressBinding(ip=ip, workload=name, source=source) for ip in own)
            r.paths.update(((source, ip), at) for ip, at in own.items())
        prefixes += attrs.prefixes
        if len(env) > 1:
            raise r.error((*enis[0][0], "TagSet"), f"the ENIs of {name} disagree on the environment: {sorted(env)}")
        # One subnet: vpc/subnet. Several (an ALB spans availability zones): the VPC alone.
        vpcs = {v for v, _ in locations if v}
        location = ("/".join(p for p in next(iter(locations)) if p) if len(locations) == 1
                    else "/".join(sorted(vpcs)) or None) or None
        workloads.append((_workload(name, WorkloadKind.SERVICE, attrs, location, None,
                                    next(iter(env)) if env else None, r.doc.file),
                          r.at((*enis[0][0], "NetworkInterfaceId"))))
    if on_instances:
        notes.append(f"{r.doc.file}: {on_instances} network interface(s) attached to instances skipped "
                     "(their addresses come from describe-instances)")
    if unidentified:
        notes.append(f"{r.doc.file}: {unidentified} network interface(s) of no identifiable service skipped")
    if branches:
        notes.append(f"{r.doc.file}: {branches} branch network interface(s) skipped (EKS security groups for "
                     "pods: each is one pod's, which the Kubernetes inventory names)")
    _prefix_note(r, prefixes, notes)


def _eni_ips(r: _Reader, eni: dict[str, object], path: NodePath) -> dict[str, NodePath]:
    """The ENI's own addresses, each with the path where it first appears."""
    out: dict[str, NodePath] = {}
    for key, version in (("PrivateIpAddress", 4), ("Ipv6Address", 6)):
        ip = r.ip(eni, path, key, version)
        if ip:
            out.setdefault(ip, (*path, key))
    for ppath, priv in r.objects(eni, path, "PrivateIpAddresses"):
        ip = r.ip(priv, ppath, "PrivateIpAddress", 4)
        if ip:
            out.setdefault(ip, (*ppath, "PrivateIpAddress"))
    for vpath, v6 in r.objects(eni, path, "Ipv6Addresses"):
        ip = r.ip(v6, vpath, "Ipv6Address", 6)
        if ip:
            out.setdefault(ip, (*vpath, "Ipv6Address"))
    return out
