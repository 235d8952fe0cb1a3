"""Writing many rows' fields in one statement.

Django's `bulk_update` builds a `CASE WHEN pk = … THEN …` per row and field: for thousands
of rows (a rule firing at every venue, carried every cycle) that costs seconds of Python
and a statement PostgreSQL must match row by row. On PostgreSQL this is one
`UPDATE … FROM (VALUES …)` per batch, joined on the primary key; elsewhere (the embedded
SQLite) it is `bulk_update`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections, router
from django.db.models import F, Field, Model


def update_in_bulk(
    objs: Sequence[Model],
    fields: Sequence[str],
    *,
    plus_one: Sequence[str] = (),
    batch_size: int = 1000,
) -> None:
    """Write `fields` of each object as it holds them, and add one to each of `plus_one` in
    the database (the objects' own copies are left as they were)."""
    if not objs:
        return
    model = type(objs[0])
    connection = connections[router.db_for_write(model)]
    if connection.vendor != "postgresql":
        kept = [{name: getattr(obj, name) for name in plus_one} for obj in objs]
        for obj in objs:
            for name in plus_one:
                setattr(obj, name, F(name) + 1)
        model._default_manager.bulk_update(objs, [*fields, *plus_one], batch_size=batch_size)
        for obj, values in zip(objs, kept, strict=True):
            for name, value in values.items():
                setattr(obj, name, value)
        return
    meta = model._meta
    quote = connection.ops.quote_name

    def field(name: str) -> Field[Any, Any]:
        found = meta.get_field(name)
        assert isinstance(found, Field), name  # a column of this table
        assert found.column, name
        return found

    pk = meta.pk
    assert pk is not None
    columns = [field(name) for name in fields]
    # Every value cast to its column's type: a NULL in VALUES has no type of its own.
    casts = [pk.db_type(connection)] + [c.db_type(connection) for c in columns]
    row = "({})".format(", ".join(f"%s::{cast}" for cast in casts))
    assignments = [f"{quote(c.column)} = v.{quote(c.column)}" for c in columns] + [
        f"{quote(field(name).column)} = t.{quote(field(name).column)} + 1" for name in plus_one
    ]
    names = ", ".join([quote(pk.column)] + [quote(c.column) for c in columns])
    for start in range(0, len(objs), batch_size):
        batch = objs[start : start + batch_size]
        params: list[Any] = []
        for obj in batch:
            params.append(obj.pk)
            params.extend(c.get_db_prep_save(getattr(obj, c.attname), connection) for c in columns)
        # Names from the model's meta, quoted; every value a parameter.
        sql = (
            f"UPDATE {quote(meta.db_table)} AS t SET {', '.join(assignments)} "  # noqa: S608
            f"FROM (VALUES {', '.join([row] * len(batch))}) AS v({names}) "
            f"WHERE t.{quote(pk.column)} = v.{quote(pk.column)}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
