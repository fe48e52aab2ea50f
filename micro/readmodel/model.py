"""Read models: typed records in an in-memory tinydb table, with O(1) key lookups.

A model sheet (``models/<name>_model.py``) declares the record type, its key, optional
indexes and a ``reset()`` seed::

    class Account(BaseModel):
        id: str
        owner: str
        balance: int = 0

    record = Account
    key = "id"
    indexes = ["owner"]

    def reset() -> list[Account]:
        return []

Reducers change models; views and rules read them. Every record is validated by its type on
the way in, so a reducer bug shows up where it happens, not in a later reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any, Generic, TypeVar

import pydantic
from pydantic import BaseModel
from tinydb import TinyDB
from tinydb.queries import QueryLike
from tinydb.storages import MemoryStorage
from tinydb.table import Table

from micro._models import dump_json, validate
from micro.errors import ConfigError, NotFoundError

__all__ = ["Model", "Models"]

RecordT = TypeVar("RecordT", bound=BaseModel)

Journal = list[tuple["Model[Any]", Any, "dict[str, Any] | None"]]
"""Writes since a point: (model, key, the record before the write or None)."""


class _IntKeys(MutableMapping[int, Any]):
    """The raw table (string ids, as tinydb stores them) seen with int ids, in place."""

    __slots__ = ("raw",)

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def __getitem__(self, key: int) -> Any:
        return self.raw[str(key)]

    def __setitem__(self, key: int, value: Any) -> None:
        self.raw[str(key)] = value

    def __delitem__(self, key: int) -> None:
        del self.raw[str(key)]

    def __contains__(self, key: object) -> bool:
        return str(key) in self.raw

    def __iter__(self) -> Iterator[int]:
        return (int(key) for key in list(self.raw))

    def __len__(self) -> int:
        return len(self.raw)


class _InPlaceTable(Table):
    """tinydb's Table rewrites the whole table on every write; this one edits it in place.

    That keeps an insert or update O(1) instead of O(table size), which is what makes
    replaying a long history into a large model possible at all.
    """

    def _update_table(self, updater: Callable[[dict[int, Mapping[str, Any]]], None]) -> None:
        tables = self._storage.read()
        if tables is None:
            tables = {}
            self._storage.write(tables)
        raw = tables.setdefault(self.name, {})
        updater(_IntKeys(raw))  # type: ignore[arg-type]
        self.clear_cache()


class _Database(TinyDB):
    table_class = _InPlaceTable


class Model(Generic[RecordT]):
    """One read model: records of one type, keyed, indexed, in memory."""

    def __init__(
        self,
        name: str,
        record: type[RecordT],
        *,
        key: str = "id",
        indexes: list[str] | None = None,
        seed: Callable[[], list[RecordT]] | None = None,
    ) -> None:
        if not (isinstance(record, type) and issubclass(record, BaseModel)):
            raise ConfigError(f"model {name!r}: record must be a pydantic model class")
        fields = record.model_fields
        if key not in fields:
            raise ConfigError(f"model {name!r}: key {key!r} is not a field of {record.__name__}")
        for index in indexes or []:
            if index not in fields:
                raise ConfigError(
                    f"model {name!r}: index {index!r} is not a field of {record.__name__}"
                )
        self.name = name
        self.record = record
        self.key = key
        self.indexes = list(indexes or [])
        self.seed = seed
        self._db = _Database(storage=MemoryStorage)
        self._table = self._db.table(name, cache_size=0)
        tables = self._db.storage.read()
        if tables is None:
            tables = {}
            self._db.storage.write(tables)
        # tinydb's own dict of this table (doc id as a string -> document), edited in place
        # by _InPlaceTable: key lookups and replacements go straight to it.
        self._documents: dict[str, dict[str, Any]] = tables.setdefault(name, {})
        self._ids: dict[Any, int] = {}
        self._index: dict[str, dict[Any, set[Any]]] = {index: {} for index in self.indexes}
        self._journal: Journal | None = None
        self.reset()

    # -- reading ------------------------------------------------------------------------

    def get(self, key: Any) -> RecordT | None:
        """The record with this key, or ``None``. O(1)."""
        doc_id = self._ids.get(key)
        if doc_id is None:
            return None
        return validate(self.record, self._documents[str(doc_id)])

    def require(self, key: Any) -> RecordT:
        """The record with this key, or ``NotFoundError`` naming it."""
        found = self.get(key)
        if found is None:
            raise NotFoundError(f"no {self.name} with {self.key} {key!r}")
        return found

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def find(self, **equals: Any) -> list[RecordT]:
        """Records whose fields equal the given values; indexed fields are looked up."""
        keys: set[Any] | None = None
        rest = {}
        for field, value in equals.items():
            if field in self._index:
                matched = self._index[field].get(value, set())
                keys = set(matched) if keys is None else keys & matched
            else:
                rest[field] = value
        candidates = (
            (record for key in keys if (record := self.get(key)) is not None)
            if keys is not None
            else iter(self.all())
        )
        return [
            record
            for record in candidates
            if all(getattr(record, field) == value for field, value in rest.items())
        ]

    def search(self, query: QueryLike) -> list[RecordT]:
        """Records matching a tinydb query (``tinydb.Query().balance > 10``)."""
        return [self.record.model_validate(dict(doc)) for doc in self._table.search(query)]

    def all(self) -> list[RecordT]:
        return [self.record.model_validate(dict(doc)) for doc in self._table.all()]

    # -- writing (reducers) -------------------------------------------------------------

    def _document(self, record: RecordT | Mapping[str, Any]) -> dict[str, Any]:
        try:
            valid = record if isinstance(record, self.record) else validate(self.record, record)
        except pydantic.ValidationError as error:
            raise ValueError(f"invalid {self.name} record: {error}") from error
        return dump_json(valid)

    def put(self, record: RecordT | Mapping[str, Any]) -> None:
        """Insert the record, or replace the one with the same key."""
        document = self._document(record)
        self._write(document[self.key], document)

    def _write(self, key: Any, document: dict[str, Any]) -> None:
        doc_id = self._ids.get(key)
        if doc_id is None:
            if self._journal is not None:
                self._journal.append((self, key, None))
            self._ids[key] = self._table.insert(document)
        else:
            # Documents are replaced, never edited, so the old one can be kept as it is.
            old = self._documents[str(doc_id)]
            if self._journal is not None:
                self._journal.append((self, key, old))
            self._unindex(key, old)
            self._documents[str(doc_id)] = document
        self._add_index(key, document)

    def insert(self, record: RecordT | Mapping[str, Any]) -> None:
        """Add a new record; ``ValueError`` if its key exists."""
        document = self._document(record)
        if document[self.key] in self._ids:
            raise ValueError(f"{self.name} {document[self.key]!r} already exists")
        self.put(document)

    def update(self, key: Any, **changes: Any) -> RecordT:
        """Change some fields of an existing record and return it."""
        doc_id = self._ids.get(key)
        if doc_id is None:
            raise NotFoundError(f"no {self.name} with {self.key} {key!r}")
        current = self._documents[str(doc_id)]
        if self.key in changes and changes[self.key] != key:
            raise ValueError(f"{self.name} {key!r}: the key {self.key!r} cannot be changed")
        try:
            updated = validate(self.record, {**current, **changes})
        except pydantic.ValidationError as error:
            raise ValueError(f"invalid {self.name} record: {error}") from error
        self._write(key, dump_json(updated))
        return updated

    def remove(self, key: Any) -> None:
        doc_id = self._ids.pop(key, None)
        if doc_id is None:
            return
        old = self._documents.pop(str(doc_id))
        if self._journal is not None:
            self._journal.append((self, key, old))
        self._unindex(key, old)

    def _add_index(self, key: Any, document: Mapping[str, Any]) -> None:
        for field, index in self._index.items():
            index.setdefault(_hashable(document.get(field)), set()).add(key)

    def _unindex(self, key: Any, document: Mapping[str, Any] | None) -> None:
        if document is None:
            return
        for field, index in self._index.items():
            index.get(_hashable(document.get(field)), set()).discard(key)

    # -- life cycle ---------------------------------------------------------------------

    def _restore(self, key: Any, document: dict[str, Any] | None) -> None:
        """Put back one record as it was (``None``: it did not exist)."""
        journal, self._journal = self._journal, None
        try:
            if document is None:
                self.remove(key)
            else:
                self.put(document)
        finally:
            self._journal = journal

    def reset(self) -> None:
        """Empty the model and load its seed."""
        self._table.truncate()
        self._ids.clear()
        for index in self._index.values():
            index.clear()
        journal, self._journal = self._journal, None
        try:
            for record in self.seed() if self.seed else []:
                self.put(record)
        finally:
            self._journal = journal

    def dump(self) -> list[dict[str, Any]]:
        """Every record as JSON data (for snapshots)."""
        return [dict(doc) for doc in self._table.all()]

    def load(self, documents: list[dict[str, Any]]) -> None:
        """Replace the content with dumped records (validated)."""
        self._table.truncate()
        self._ids.clear()
        for index in self._index.values():
            index.clear()
        journal, self._journal = self._journal, None  # a load is never undone record by record
        try:
            for document in documents:
                self.put(document)
        finally:
            self._journal = journal

    def fresh(self) -> Model[RecordT]:
        """An empty copy with the same definition (for rebuilds)."""
        return Model(self.name, self.record, key=self.key, indexes=self.indexes, seed=self.seed)

    def schema_fingerprint(self) -> str:
        """Changes when the record type or key changes: snapshots of another shape are stale."""
        import hashlib

        import orjson

        shape = {"schema": self.record.model_json_schema(), "key": self.key}
        return hashlib.sha256(orjson.dumps(shape, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _hashable(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


class Models:
    """The models of a service, by name: ``models.account.get("a-1")``."""

    def __init__(self, models: dict[str, Model[Any]] | None = None) -> None:
        self._models: dict[str, Model[Any]] = {}
        self._journal: Journal | None = None
        for model in (models or {}).values():
            self.replace(model)

    def add(self, model: Model[Any]) -> None:
        if model.name in self._models:
            raise ConfigError(f"model {model.name!r} is defined twice")
        self.replace(model)

    def replace(self, model: Model[Any]) -> None:
        self._models[model.name] = model
        model._journal = self._journal
        if not hasattr(type(self), model.name):
            # An instance attribute: ``models.account`` is found without __getattr__, which
            # matters to reducers reading it for every event of a replay.
            self.__dict__[model.name] = model

    def record_changes(self) -> Journal:
        """From now on every write is noted in the returned journal, so it can be undone.

        The projector clears it before each event and, when a reducer fails, undoes what
        the failed event changed (``undo``): the models stay as they were before it.
        """
        if self._journal is None:
            self._journal = []
            for model in self._models.values():
                model._journal = self._journal
        return self._journal

    def undo(self) -> None:
        """Put back every record changed since the journal was last cleared."""
        journal = self._journal
        if journal is None:
            return
        for model, key, document in reversed(journal):
            model._restore(key, document)
        journal.clear()

    def __getattr__(self, name: str) -> Model[Any]:
        try:
            return self._models[name]
        except KeyError:
            known = ", ".join(sorted(self._models)) or "none"
            raise AttributeError(f"no model named {name!r} (models: {known})") from None

    def __getitem__(self, name: str) -> Model[Any]:
        return self.__getattr__(name)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __iter__(self) -> Iterator[Model[Any]]:
        return iter(self._models.values())

    def names(self) -> list[str]:
        return sorted(self._models)
