"""Semantic diff of the policy-as-code between two git revisions, with the rules responsible.

A pull request that edits ``rules.yaml`` is reviewed as text; what matters is which connections it
adds or removes. :func:`policy_at` reads the policy directory as it is at a revision (``git ls-tree`` and
``git cat-file``, never the working tree), :func:`diff_policies` evaluates both with
:func:`microseg.ir.semantics.connectivity`, diffs them with :func:`microseg.analyses.conndiff.semantic_diff`
and names, for every changed pair, the rules (and exceptions) whose sources, destinations, protocol
and ports cover the added connections in the newer revision and the removed ones in the older.

A pair can change without any rule: a workload moved in or out of an excluded namespace, or the
settings changed, so that neither side is under default deny any more (or again). Such a change says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

from microseg.analyses.conndiff import PairChange, semantic_diff
from microseg.analyses.drift import intersect, subtract
from microseg.errors import InputError
from microseg.ir.model import Policy, PortRange, Protocol
from microseg.ir.semantics import ALL_PORTS, Connections, Evaluator, connectivity
from microseg.ir.serde import FILES, load_policy

Side = Literal["before", "after"]


# -- reading a revision -------------------------------------------------------------------------------------


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        # cwd=repo so that "./path" in a revision:path argument is relative to the --repo directory
        # (gitrevisions(7): "A path starting with ./ or ../ is relative to the current working directory").
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, check=False, timeout=120)
    except FileNotFoundError:
        raise InputError("git is not installed (needed to read policy revisions)") from None
    except NotADirectoryError:
        raise InputError("not a directory", file=str(repo), field="--repo") from None


def resolve(repo: Path, rev: str) -> str:
    """The commit id of ``rev``; an :class:`InputError` when it does not name a commit."""
    if not repo.is_dir():
        raise InputError("repository directory not found", file=str(repo), field="--repo")
    if not rev or rev.startswith("-"):  # never let a revision be read as an option
        raise InputError(f"not a revision: {rev!r}", field="REV")
    res = _git(repo, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
    if res.returncode != 0:
        raise InputError(f"{rev!r} is not a commit of the repository at {repo}", file=str(repo), field="REV")
    return res.stdout.decode().strip()


def policy_at(repo: Path, rev: str, policy_dir: str = "policy") -> tuple[Policy, str]:
    """The policy directory ``policy_dir`` (relative to ``repo``) as committed at ``rev``, and its commit id."""
    if PurePosixPath(policy_dir).is_absolute():
        raise InputError("give the policy directory relative to --repo", file=policy_dir, field="--policy-dir")
    commit = resolve(repo, rev)
    norm = str(PurePosixPath(policy_dir))
    rel = "." if norm == "." else f"./{norm}"
    listing = _git(repo, "ls-tree", "--name-only", commit, "--", rel + "/")
    if listing.returncode != 0:
        raise InputError(f"cannot list {policy_dir} at {rev}: {listing.stderr.decode().strip()}", field="--policy-dir")
    present = {Path(line).name for line in listing.stdout.decode().splitlines()}
    where = f"{rev}:{norm}"
    if not present & set(FILES):
        raise InputError(f"no policy files in {policy_dir} at revision {rev}", file=where, field="--policy-dir")
    texts: dict[str, str] = {}
    for name in FILES:
        if name not in present:
            continue
        blob = _git(repo, "cat-file", "blob", f"{commit}:{rel}/{name}")
        if blob.returncode != 0:
            raise InputError(f"cannot read at {rev}: {blob.stderr.decode().strip()}", file=f"{where}/{name}")
        try:
            texts[name] = blob.stdout.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not UTF-8 text", file=f"{where}/{name}") from None
    return load_policy(texts, where=where), commit


# -- the diff -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExplainedChange:
    """One changed pair, the connections it gained and lost, and the rules behind each."""

    change: PairChange
    added: Connections  # allowed after, not before
    removed: Connections  # allowed before, not after
    added_by: tuple[str, ...]  # rules of the newer revision that allow part of ``added``
    removed_by: tuple[str, ...]  # rules of the older revision that allowed part of ``removed``
    note: str = ""

    @property
    def widens(self) -> bool:
        return not self.added.empty


@dataclass(frozen=True)
class RevisionDiff:
    rev1: str
    rev2: str
    commit1: str
    commit2: str
    changes: tuple[ExplainedChange, ...]

    @property
    def widens(self) -> bool:
        return any(c.widens for c in self.changes)


def _rule_connections(protocol: Protocol, ports: Sequence[PortRange]) -> Connections:
    if protocol == Protocol.ICMP:
        return Connections.of([(Protocol.ICMP, ALL_PORTS)])
    return Connections.of((protocol, r) for r in ports)


def responsible(policy: Policy, source: str, destination: str, conns: Connections) -> tuple[str, ...]:
    """Ids of ``policy``'s rules and exceptions that allow part of ``conns`` from ``source`` to ``destination``.

    Exceptions are marked ``(exception)`` so that a reviewer sees an approval expire or appear.
    """
    if conns.empty:
        return ()
    exceptions = {x.rule.id for x in policy.exceptions}
    out = set()
    for rule in policy.all_rules():
        if source not in rule.sources or destination not in rule.destinations:
            continue
        if not intersect(_rule_connections(rule.protocol, rule.ports), conns).empty:
            out.add(f"{rule.id} (exception)" if rule.id in exceptions else rule.id)
    return tuple(sorted(out))


def _unenforced_note(policy: Policy, source: str, destination: str, rev: str) -> str:
    ev = Evaluator(policy)
    if not ev.enforced(source) and not ev.enforced(destination):
        return f"at {rev} neither side is under default deny"
    return ""


def diff_policies(before: Policy, after: Policy, *, rev1: str = "before", rev2: str = "after", commit1: str = "",
                  commit2: str = "") -> RevisionDiff:
    """Connectivity of ``before`` vs ``after``, each over its own universe, with the rules responsible."""
    changes = semantic_diff(connectivity(before), connectivity(after),
                            before_workloads=[w.name for w in before.workloads],
                            after_workloads=[w.name for w in after.workloads])
    out = []
    for c in changes:
        added = subtract(c.after, c.before)
        removed = subtract(c.before, c.after)
        added_by = responsible(after, c.source, c.destination, added)
        removed_by = responsible(before, c.source, c.destination, removed)
        notes = [c.workload_note] if c.workload_note else []
        if not added.empty and not added_by:
            notes.append(_unenforced_note(after, c.source, c.destination, rev2))
        if not removed.empty and not removed_by:
            notes.append(_unenforced_note(before, c.source, c.destination, rev1))
        out.append(ExplainedChange(c, added, removed, added_by, removed_by, "; ".join(n for n in notes if n)))
    return RevisionDiff(rev1, rev2, commit1, commit2, tuple(out))


def diff_revisions(repo: Path, rev1: str, rev2: str, policy_dir: str = "policy") -> RevisionDiff:
    before, commit1 = policy_at(repo, rev1, policy_dir)
    after, commit2 = policy_at(repo, rev2, policy_dir)
    return diff_policies(before, after, rev1=rev1, rev2=rev2, commit1=commit1, commit2=commit2)


__all__ = ["ExplainedChange", "RevisionDiff", "diff_policies", "diff_revisions", "policy_at", "resolve", "responsible"]
