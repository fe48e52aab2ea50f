"""Models on tinydb: typed records, O(1) key lookups, indexes, and undoing a failed event."""

from __future__ import annotations

import time

import pytest
from pydantic import BaseModel
from tinydb import Query

from micro import ConfigError, NotFoundError
from micro.readmodel import Model, Models


class Account(BaseModel):
    id: str
    owner: str
    balance: int = 0


def accounts(*records: Account) -> Model[Account]:
    model = Model("account", Account, indexes=["owner"])
    for record in records:
        model.put(record)
    return model


def test_put_get_update_remove() -> None:
    model = accounts(Account(id="a", owner="ada"))
    assert model.get("a") == Account(id="a", owner="ada")
    assert model.update("a", balance=5) == Account(id="a", owner="ada", balance=5)
    assert model.require("a").balance == 5
    model.put({"id": "a", "owner": "bob", "balance": 1})  # replaces
    assert model.find(owner="ada") == []
    assert model.find(owner="bob") == [Account(id="a", owner="bob", balance=1)]
    model.remove("a")
    model.remove("a")  # removing what is gone is fine
    assert model.get("a") is None
    assert len(model) == 0


def test_records_are_validated_on_the_way_in() -> None:
    model = accounts()
    with pytest.raises(ValueError, match="invalid account record"):
        model.put({"id": "a", "owner": "ada", "balance": "lots"})
    model.insert({"id": "a", "owner": "ada"})
    with pytest.raises(ValueError, match="already exists"):
        model.insert({"id": "a", "owner": "ada"})
    with pytest.raises(NotFoundError, match="no account with id 'b'"):
        model.require("b")


def test_find_uses_indexes_and_plain_fields_together() -> None:
    model = accounts(
        Account(id="a", owner="ada", balance=1),
        Account(id="b", owner="ada", balance=2),
        Account(id="c", owner="bob", balance=2),
    )
    assert sorted(r.id for r in model.find(owner="ada")) == ["a", "b"]
    assert [r.id for r in model.find(owner="ada", balance=2)] == ["b"]
    assert sorted(r.id for r in model.find(balance=2)) == ["b", "c"]
    assert [r.id for r in model.search(Query().balance > 1)] == ["b", "c"]


def test_key_lookups_and_writes_stay_constant_time_as_the_model_grows() -> None:
    def timed(size: int) -> float:
        model = Model("account", Account)
        for number in range(size):
            model.put({"id": str(number), "owner": "x"})
        started = time.perf_counter()
        for number in range(0, size, size // 500):
            model.update(str(number), balance=1)
            model.get(str(number))
        return time.perf_counter() - started

    # the best of three: a busy machine only ever makes a round slower
    small = min(timed(1_000) for _ in range(3))
    large = min(timed(40_000) for _ in range(3))
    assert large < small * 8  # the same work on a model 40x larger; O(n) would be ~40x


def test_a_bad_definition_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="key 'name' is not a field"):
        Model("account", Account, key="name")
    with pytest.raises(ConfigError, match="index 'city' is not a field"):
        Model("account", Account, indexes=["city"])
    models = Models({"account": accounts()})
    with pytest.raises(ConfigError, match="defined twice"):
        models.add(accounts())
    with pytest.raises(AttributeError, match=r"no model named 'acount' \(models: account\)"):
        _ = models.acount


def test_reset_loads_the_seed_and_dump_load_round_trip() -> None:
    model = Model("account", Account, seed=lambda: [Account(id="bank", owner="bank")])
    model.put({"id": "a", "owner": "ada"})
    dumped = model.dump()
    model.reset()
    assert [r.id for r in model.all()] == ["bank"]
    copy = model.fresh()
    copy.load(dumped)
    assert copy.dump() == dumped
    assert copy.schema_fingerprint() == model.schema_fingerprint()
    assert Model("account", Account, key="owner").schema_fingerprint() != model.schema_fingerprint()


def test_undo_puts_back_every_record_changed_since_the_journal_was_cleared() -> None:
    models = Models({"account": accounts(Account(id="a", owner="ada", balance=1))})
    journal = models.record_changes()
    journal.clear()
    before = models.account.dump()
    models.account.update("a", balance=99, owner="eve")
    models.account.put({"id": "b", "owner": "bob"})
    models.account.update("b", balance=3)
    models.account.remove("a")
    models.undo()
    assert models.account.dump() == before
    assert [r.id for r in models.account.find(owner="ada")] == ["a"]
    assert models.account.find(owner="eve") == []
    assert models.account.find(owner="bob") == []
    assert journal == []


def test_a_model_replaced_in_models_joins_their_journal() -> None:
    models = Models({"account": accounts()})
    models.record_changes()
    fresh = accounts()
    models.replace(fresh)
    models.account.put({"id": "z", "owner": "zed"})
    models.undo()
    assert "z" not in fresh
