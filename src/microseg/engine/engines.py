"""Where the mapping job runs: ``--engine`` values, connections, and how flows reach the engine.

``--engine`` takes:

- ``duckdb`` (default): the embedded DuckDB flow store that ``--flows`` is ingested into;
- ``spark``: a PySpark session, ``local[*]`` unless ``MICROSEG_SPARK_MASTER`` names a master;
  ``spark://host:7077`` (or any ``spark://`` URL) connects to that standalone master;
- any other ``scheme://...`` URL: ``ibis.connect(url)`` - Trino (``trino://user@host:8080/hive/flows``),
  a DuckDB database file (``duckdb:///path/to.db``), and the other engines Ibis supports.

Flows reach the engine in one of two ways. With ``?table=NAME`` in the URL (``spark?table=NAME``
for a Spark session with the default master) the engine reads an existing table (or view) of
normalised flows with the columns of ``job.FLOW_SCHEMA`` - e.g. a view over VPC flow logs in
S3 - and nothing is ingested locally. Without it, ``--flows`` is ingested into the local store by
microseg's own readers and the store's ``flows`` table is written to Parquet for the engine to
read (a directory the engine can see: see ``MICROSEG_STAGING_DIR``). Either way only the edges, the
coverage counts and the distinct addresses come back.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

from microseg.engine.store import FLOWS_COLUMNS, FlowStore
from microseg.errors import InputError
from microseg.ir.model import Inventory
from microseg.sources.flows import sql_str

# Ibis, PyArrow and pandas take seconds to import: only the commands that map flows load them
# (inside the functions below); parsing --engine does not.
if TYPE_CHECKING:
    import ibis.expr.types as ir
    import pyarrow as pa
    from ibis.backends import BaseBackend

    from microseg.engine.mapping import MappingResult

DEFAULT_SPARK_MASTER = "local[*]"
SPARK_MASTER_ENV = "MICROSEG_SPARK_MASTER"
STAGING_ENV = "MICROSEG_STAGING_DIR"
FORMS = ("duckdb", "spark", "spark?table=NAME", "spark://HOST:PORT[?table=NAME]",
         "SCHEME://...[?table=NAME] (an Ibis connection URL, e.g. trino://user@host:8080/hive/flows)")

Kind = Literal["duckdb", "spark", "ibis"]


@dataclass(frozen=True)
class EngineSpec:
    """A parsed ``--engine`` value. ``url``: the Spark master or the Ibis URL, without ``table``."""

    kind: Kind
    url: str | None = None
    table: str | None = None

    @property
    def display(self) -> str:
        """For reports and errors: the URL without a password."""
        if self.kind == "duckdb":
            return "duckdb"
        text = redact(self.url or "")
        table = f"{'&' if '?' in text else '?'}table={self.table}" if self.table else ""
        return f"{self.kind}:{text}{table}"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _split_table(text: str) -> tuple[str, str | None]:
    """``text`` without its ``table`` query parameter, and that parameter. Only the query string is
    rewritten (urlunsplit would turn ``duckdb:///x.db`` into ``duckdb:/x.db``)."""
    base, _, query = text.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    tables = [v for k, v in pairs if k == "table"]
    if len(tables) > 1 or (tables and not tables[0].strip()):
        raise InputError("give one non-empty table=NAME", file=redact(text), field="--engine")
    rest = urlencode([(k, v) for k, v in pairs if k != "table"])
    return base + (f"?{rest}" if rest else ""), (tables[0] if tables else None)


def parse_engine(value: str | None) -> EngineSpec:
    """The ``--engine`` value; see the module docstring for the forms."""
    text = (value or "duckdb").strip()
    if text == "duckdb":
        return EngineSpec("duckdb")
    if text == "spark" or text.startswith("spark?"):
        _, table = _split_table("spark://" + text[len("spark"):])
        return EngineSpec("spark", os.environ.get(SPARK_MASTER_ENV) or DEFAULT_SPARK_MASTER, table)
    if text.startswith("spark://"):
        url, table = _split_table(text)
        if not urlsplit(url).hostname:
            raise InputError("a spark:// master needs a host", file=redact(text), field="--engine")
        return EngineSpec("spark", url, table)
    scheme = urlsplit(text).scheme
    if "://" not in text or not scheme:
        raise InputError(f"unknown engine {redact(text)!r}; use one of: {'; '.join(FORMS)}", field="--engine")
    url, table = _split_table(text)
    return EngineSpec("ibis", url, table)


# -- connections ---------------------------------------------------------------------------------

def spark_session(master: str) -> Any:
    """A PySpark session for ``master`` (needs the ``spark`` extra and Java 17)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise InputError("--engine spark needs the spark extra: pip install 'microseg[spark]'",
                         field="--engine") from None
    builder = (SparkSession.builder.master(master).appName("microseg-mapping")
               # Spark keeps timestamps as instants rendered in the session zone; the flow store's
               # times are UTC (Spark SQL reference, "Datetime patterns" / session time zone).
               .config("spark.sql.session.timeZone", "UTC")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false"))  # microseg prints its own progress
    if master.startswith("local"):
        # The default 200 shuffle partitions are meant for clusters; on one machine they are
        # mostly scheduling overhead (Spark SQL performance tuning guide).
        builder = builder.config("spark.sql.shuffle.partitions", str(min(os.cpu_count() or 2, 8)))
    return builder.getOrCreate()


class SparkLoader:
    """Inventory tables as Spark temporary views made from Arrow, dropped by ``close``.

    Not Ibis's in-memory tables: Ibis 12's PySpark backend builds them through pandas, which turns
    NULL strings into the text 'NaN', and does not register them before ``Table.cache``.
    """

    def __init__(self, backend: BaseBackend) -> None:
        self.backend = backend
        self.session = backend._session
        self.views: list[str] = []

    def __call__(self, name: str, table: pa.Table) -> ir.Table:
        view = f"microseg_{name}_{uuid.uuid4().hex}"
        # Spark 4 builds a DataFrame from an Arrow table directly, types and NULLs intact.
        self.session.createDataFrame(table).createOrReplaceTempView(view)
        self.views.append(view)
        return self.backend.table(view)

    def close(self) -> None:
        for view in self.views:
            self.session.catalog.dropTempView(view)
        self.views.clear()


def _map_on(backend: BaseBackend, flows: ir.Table, inventory: Inventory, where: str) -> MappingResult:
    from microseg.engine.mapping import map_table

    if backend.name != "pyspark":
        return map_table(backend, flows, inventory, where=where, cache=_can_cache(backend))
    loader = SparkLoader(backend)
    try:
        return map_table(backend, flows, inventory, where=where, cache=True, load=loader)
    finally:
        loader.close()


def connect(spec: EngineSpec, *, session: Any = None) -> BaseBackend:
    """An Ibis backend for a Spark or URL engine (the embedded default needs no connection)."""
    import ibis

    if spec.kind == "spark":
        return ibis.pyspark.connect(session or spark_session(spec.url or DEFAULT_SPARK_MASTER))
    if spec.kind == "ibis":
        assert spec.url is not None
        scheme = urlsplit(spec.url).scheme
        try:
            return ibis.connect(spec.url)
        except ImportError:
            raise InputError(f"the client library for {scheme}:// is not installed: pip install "
                             f"'ibis-framework[{scheme}]'", file=spec.display, field="--engine") from None
        except ValueError as exc:  # Ibis: "Don't know how to connect to ..." and bad URL parameters
            raise InputError(f"cannot connect: {exc}", file=spec.display, field="--engine") from None
    raise ValueError(f"no connection for {spec.kind}")


# -- flows on the engine ---------------------------------------------------------------------------

def engine_table(backend: BaseBackend, spec: EngineSpec) -> ir.Table:
    """The user's table of normalised flows on the engine (``?table=``), dotted names allowed."""
    from ibis.common.exceptions import TableNotFound

    assert spec.table is not None
    *db, name = spec.table.split(".")
    database: tuple[str, str] | str | None = (db[0], db[1]) if len(db) == 2 else (db[0] if db else None)
    # Not list_tables(): on DuckDB 2.0 Ibis 12's list_tables calls a connection method DuckDB removed.
    try:
        if len(db) > 2:
            raise TableNotFound(spec.table)
        return backend.table(name, database=database)
    except TableNotFound:
        raise InputError(f"no table {spec.table!r} on the engine", file=spec.display, field="table") from None


@contextmanager
def staged_flows(store: FlowStore) -> Iterator[Path]:
    """The store's flows as one Parquet file, in ``MICROSEG_STAGING_DIR`` or beside the store.

    The directory must be readable by the engine at the same path: always true for local Spark
    and a local DuckDB; for a cluster, a shared mount - or, better, a table in the lake.
    """
    base = os.environ.get(STAGING_ENV)
    with tempfile.TemporaryDirectory(prefix="microseg-flows-", dir=base or store.path.parent) as tmp:
        path = Path(tmp) / "flows.parquet"
        columns = ", ".join(FLOWS_COLUMNS)
        store.con.execute(f"COPY (SELECT {columns} FROM flows) TO {sql_str(str(path))} (FORMAT parquet)")
        yield path


@contextmanager
def _connected(spec: EngineSpec, session: Any) -> Iterator[BaseBackend]:
    """A backend for the run; closed afterwards unless the caller brought the Spark session."""
    backend = connect(spec, session=session)
    try:
        yield backend
    finally:
        if spec.kind == "ibis" or session is None:
            backend.disconnect()


def map_store(spec: EngineSpec, store: FlowStore, inventory: Inventory, *, session: Any = None) -> MappingResult:
    """Map the flows ingested into ``store`` on the engine ``spec`` names."""
    from microseg.engine.mapping import map_flows

    if spec.kind == "duckdb":
        return map_flows(store, inventory)
    with _connected(spec, session) as backend, staged_flows(store) as path:
        try:
            flows = backend.read_parquet(str(path))
        except (AttributeError, NotImplementedError):
            raise InputError(f"{spec.display} cannot read local files: name a table of normalised flows "
                             "with ?table=NAME (README, Engines)", field="--engine") from None
        return _map_on(backend, flows, inventory, spec.display)


def map_engine_table(spec: EngineSpec, inventory: Inventory, *, session: Any = None) -> MappingResult:
    """Map the flows of an existing table on the engine (``?table=``); nothing is ingested locally."""
    with _connected(spec, session) as backend:
        return _map_on(backend, engine_table(backend, spec), inventory, spec.display)


def _can_cache(backend: BaseBackend) -> bool:
    """Whether to materialise the oriented flows once for the three result queries.

    DuckDB and Spark keep them in temporary tables / cached DataFrames. Elsewhere Ibis's cache is a
    CREATE TABLE, which needs write access (Trino/Athena catalogs are often read-only), so those
    engines evaluate the job three times instead (see README, Engines).
    """
    return backend.name in ("duckdb", "pyspark")
