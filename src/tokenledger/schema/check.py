"""``tokenledger db check``: does the live schema match the models and the revisions?

Two comparisons, each naming every difference it finds:

* **The models** (``storage/models.py``): Alembic's autogenerate diff, with
  types and server defaults compared, over the ledger's own tables. Only at
  head, since the models describe head.
* **The revisions**: a reference schema is built by running the shipped
  revisions up to the database's own revision, and the live catalog is
  compared with it object by object: tables, columns (type, nullability,
  server default), primary and foreign keys, unique and CHECK constraints,
  indexes (with their predicates), triggers (and whether they are enabled)
  and the server functions (their stored bodies, which come from the
  package's ``.sql`` files). This is what autogenerate cannot see.

Where the reference is built:

* PostgreSQL: in a scratch schema, inside one transaction that is rolled
  back (PostgreSQL's DDL is transactional), so nothing is left behind and no
  lock is taken on the live tables. It needs the right to create a schema
  in the database, which the role that runs the migrations has.
* SQLite: in a private in-memory database.

Catalog text is compared after normalising what legitimately differs: white
space, and the schema name PostgreSQL prints in front of objects outside the
search path.
"""

from __future__ import annotations

import re
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import ClauseElement, Connection, Engine, inspect, text
from sqlalchemy.exc import SAWarning

from tokenledger.schema import migrations
from tokenledger.storage.engines import create_engine
from tokenledger.storage.models import Base

__all__ = ["Drift", "check_schema"]

# Every server function the ledger installs is named so (see storage/posting/sql/).
_FUNCTION_PREFIX = "tokenledger_"


@dataclass(frozen=True, slots=True)
class Drift:
    """One difference between the live schema and what it should be.

    ``kind`` is one of ``revision``, ``model``, ``table``, ``column``,
    ``constraint``, ``index``, ``trigger``, ``function``; ``name`` the object
    concerned; ``detail`` what differs.
    """

    kind: str
    name: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.name}: {self.detail}"


def check_schema(engine: Engine) -> list[Drift]:
    """Every difference between the live schema and the models and revisions.

    An empty list means the schema is exactly what the package's revisions
    create, and at head it also matches the models.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: the database cannot be read (the CLI
            maps this to its database exit code).
    """
    with engine.connect() as connection:
        revision = migrations.current(connection)
        connection.rollback()
        head = migrations.head()
        known = {name for name, _, _ in migrations.history()}
        if revision is None:
            return [Drift("revision", "none", f"no tokenledger schema (head is {head})")]
        if revision not in known:
            return [
                Drift("revision", revision, f"unknown to this version of tokenledger (head {head})")
            ]
        drifts: list[Drift] = []
        if revision != head:
            drifts.append(Drift("revision", revision, f"not at head {head}"))
        else:
            drifts.extend(_model_drift(connection))
            connection.rollback()
        if connection.dialect.name == "postgresql":
            drifts.extend(_postgres_drift(connection, revision))
        else:
            drifts.extend(_sqlite_drift(connection, revision))
        return drifts


def _model_drift(connection: Connection) -> list[Drift]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_object": migrations.include_object,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    with warnings.catch_warnings():
        # Reflecting a constraint an owner re-added NOT VALID warns about its
        # dialect options; the catalog comparison names that drift itself.
        warnings.simplefilter("ignore", SAWarning)
        diffs = list(_flat(compare_metadata(context, Base.metadata)))
    return [Drift("model", _diff_name(d), _diff_text(d, connection)) for d in diffs]


def _flat(diffs: Iterable[Any]) -> Iterable[Any]:
    for diff in diffs:
        if isinstance(diff, list):  # column changes come as a list of tuples
            yield from diff
        else:
            yield diff


def _diff_name(diff: Any) -> str:
    kind = diff[0]
    if kind.startswith("modify_"):
        return f"{diff[2]}.{diff[3]}"
    target = diff[-1] if kind in {"add_column", "remove_column"} else diff[1]
    return str(getattr(target, "name", target))


def _diff_text(diff: Any, connection: Connection) -> str:
    kind = diff[0]
    if kind.startswith("modify_"):
        live, model = (_shown(v, connection) for v in diff[-2:])
        return f"{kind}: live {live}, the model says {model}"
    return f"{kind} (the live schema and the models differ)"


def _shown(value: Any, connection: Connection) -> str:
    """A reflected or declared default or type as SQL text."""
    value = getattr(value, "arg", value)  # a DefaultClause holds its expression
    if isinstance(value, ClauseElement):
        return str(value.compile(dialect=connection.dialect))
    return repr(value)


# -- the catalog, as comparable text ------------------------------------------------


Catalog = dict[tuple[str, str], str]  # (kind, name) -> its normalised definition


def _normal(sql: str | None, schema: str | None = None) -> str:
    value = sql or ""
    if schema:
        value = value.replace(f'"{schema}".', "").replace(f"{schema}.", "")
    return re.sub(r"\s+", " ", value).strip()


def _tables_catalog(connection: Connection, schema: str | None) -> Catalog:
    """Tables, columns, keys, constraints and indexes, as SQLAlchemy reflects them."""
    inspector = inspect(connection)
    dialect = connection.dialect
    names = set(inspector.get_table_names(schema=schema)) & migrations.LEDGER_TABLES
    catalog: Catalog = {}
    for table in sorted(names):
        catalog["table", table] = "present"
        for column in inspector.get_columns(table, schema=schema):
            default = column.get("default")
            catalog["column", f"{table}.{column['name']}"] = _normal(
                f"{column['type'].compile(dialect=dialect)} "
                f"{'NULL' if column['nullable'] else 'NOT NULL'} DEFAULT {default}",
                schema,
            )
        pk = inspector.get_pk_constraint(table, schema=schema)
        catalog["constraint", f"{table}.{pk.get('name')}"] = (
            f"PRIMARY KEY ({', '.join(pk['constrained_columns'])})"
        )
        for fk in inspector.get_foreign_keys(table, schema=schema):
            catalog["constraint", f"{table}.{fk.get('name')}"] = (
                f"FOREIGN KEY ({', '.join(fk['constrained_columns'])}) REFERENCES "
                f"{fk['referred_table']} ({', '.join(fk['referred_columns'])})"
            )
        for unique in inspector.get_unique_constraints(table, schema=schema):
            catalog["constraint", f"{table}.{unique.get('name')}"] = (
                f"UNIQUE ({', '.join(str(c) for c in unique['column_names'])})"
            )
        for check in inspector.get_check_constraints(table, schema=schema):
            catalog["constraint", f"{table}.{check.get('name')}"] = "CHECK " + _normal(
                check["sqltext"], schema
            )
    return catalog


def _compare(live: Catalog, reference: Catalog) -> list[Drift]:
    drifts = []
    for key in sorted(set(live) | set(reference)):
        kind, name = key
        want, have = reference.get(key), live.get(key)
        if want == have:
            continue
        if have is None:
            drifts.append(Drift(kind, name, f"missing (the revisions create: {want})"))
        elif want is None:
            drifts.append(Drift(kind, name, f"not created by any revision: {have}"))
        else:
            drifts.append(Drift(kind, name, f"is {have!r}, the revisions create {want!r}"))
    return drifts


# -- PostgreSQL -------------------------------------------------------------------------


_PG_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes AS i
WHERE i.schemaname = :schema AND i.tablename = ANY(:tables)
"""
_PG_TRIGGERS = """
SELECT c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid) || ' ENABLED ' || t.tgenabled::text
FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE NOT t.tgisinternal AND n.nspname = :schema AND c.relname = ANY(:tables)
"""
_PG_FUNCTIONS = """
SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       pg_get_function_result(p.oid) || ' ' || l.lanname || ' ' || p.provolatile::text || ' '
       || CASE WHEN p.prosecdef THEN 'SECURITY DEFINER ' ELSE '' END
       || CASE WHEN p.proisstrict THEN 'STRICT ' ELSE '' END
       || coalesce('SET ' || array_to_string(p.proconfig, ', ') || ' ', '')
       || p.prosrc
FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
JOIN pg_language AS l ON l.oid = p.prolang
WHERE n.nspname = :schema AND p.proname LIKE :prefix
"""
# What reflection does not show and an owner can change: how a table is kept
# (unlogged), row-level security, rewrite rules and policies, constraints
# re-added NOT VALID, and the ledger's sequences.
_PG_TABLE_OPTIONS = """
SELECT c.relname, 'persistence ' || c.relpersistence::text || ' row security '
       || c.relrowsecurity::text || ' forced ' || c.relforcerowsecurity::text
FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relname = ANY(:tables) AND c.relkind = 'r'
"""
_PG_RULES = """
SELECT tablename || '.' || rulename, definition FROM pg_rules
WHERE schemaname = :schema AND tablename = ANY(:tables)
"""
_PG_POLICIES = """
SELECT tablename || '.' || policyname, cmd || ' ' || coalesce(qual, '') || ' '
       || coalesce(with_check, '')
FROM pg_policies WHERE schemaname = :schema AND tablename = ANY(:tables)
"""
_PG_UNVALIDATED = """
SELECT c.relname || '.' || k.conname, 'NOT VALID' FROM pg_constraint AS k
JOIN pg_class AS c ON c.oid = k.conrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE n.nspname = :schema AND c.relname = ANY(:tables) AND NOT k.convalidated
"""
_PG_SEQUENCES = """
SELECT sequencename, data_type::text || ' start ' || start_value || ' min ' || min_value
       || ' max ' || max_value || ' by ' || increment_by || ' cycle ' || cycle::text
FROM pg_sequences WHERE schemaname = :schema AND sequencename LIKE 'token%'
"""


def _postgres_catalog(connection: Connection, schema: str) -> Catalog:
    catalog = _tables_catalog(connection, schema)
    tables = sorted(migrations.LEDGER_TABLES)
    for query, kind, params in (
        (_PG_INDEXES, "index", {"schema": schema, "tables": tables}),
        (_PG_TRIGGERS, "trigger", {"schema": schema, "tables": tables}),
        (_PG_FUNCTIONS, "function", {"schema": schema, "prefix": _FUNCTION_PREFIX + "%"}),
        (_PG_TABLE_OPTIONS, "table options", {"schema": schema, "tables": tables}),
        (_PG_RULES, "rule", {"schema": schema, "tables": tables}),
        (_PG_POLICIES, "policy", {"schema": schema, "tables": tables}),
        (_PG_UNVALIDATED, "constraint validity", {"schema": schema, "tables": tables}),
        (_PG_SEQUENCES, "sequence", {"schema": schema}),
    ):
        for name, definition in connection.execute(text(query), params):
            catalog[kind, name] = _normal(definition, schema)
    # A primary key's and a unique constraint's own index are covered as constraints.
    return catalog


def _postgres_drift(connection: Connection, revision: str) -> list[Drift]:
    live_schema = connection.execute(text("SELECT current_schema()")).scalar_one()
    scratch = f"tokenledger_check_{uuid.uuid4().hex[:12]}"
    guards = _guards_switched_off(connection)
    try:
        live = _postgres_catalog(connection, live_schema)
        # The reference: the revisions run in a scratch schema, then rolled back.
        connection.execute(text(f'CREATE SCHEMA "{scratch}"'))
        connection.execute(text(f'SET LOCAL search_path TO "{scratch}"'))
        migrations.upgrade(connection, revision)
        reference = _postgres_catalog(connection, scratch)
    finally:
        connection.rollback()
    return guards + _compare(live, reference)


def _guards_switched_off(connection: Connection) -> list[Drift]:
    """A database or role default that turns every trigger off (the append-only guards too)."""
    role = connection.execute(text("SHOW session_replication_role")).scalar_one()
    if role == "origin":
        return []
    return [
        Drift(
            "setting",
            "session_replication_role",
            f"is {role!r} for new sessions (ALTER DATABASE or ALTER ROLE ... SET): every "
            "trigger, the append-only guards included, is off; the revisions expect 'origin'",
        )
    ]


# -- SQLite -----------------------------------------------------------------------------


def _sqlite_catalog(connection: Connection) -> Catalog:
    catalog = _tables_catalog(connection, None)
    rows = connection.execute(
        text(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE type IN ('table', 'index', 'trigger') AND sql IS NOT NULL"
        )
    )
    for kind, name, table, sql in rows:
        if table in migrations.LEDGER_TABLES:
            # A table's own text too: reflection drops what it cannot map (a COLLATE).
            key = "table definition" if kind == "table" else kind
            catalog[key, f"{table}.{name}" if kind == "trigger" else name] = _normal(sql)
    return catalog


def _sqlite_drift(connection: Connection, revision: str) -> list[Drift]:
    live = _sqlite_catalog(connection)
    connection.rollback()
    scratch = create_engine("sqlite://")
    try:
        migrations.upgrade(scratch, revision)
        with scratch.connect() as reference_connection:
            reference = _sqlite_catalog(reference_connection)
    finally:
        scratch.dispose()
    return _compare(live, reference)
