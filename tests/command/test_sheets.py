"""Sheets: found by name beside the app, or given as objects; clear errors when wrong."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
from pydantic import BaseModel

from micro import ConfigError, Micro, Settings, ValidationError
from micro.command.sheets import RuleSheet, load_rule_sheet, sheet_name
from micro.readmodel import AppliedEvent, Event, Model
from tests.command.support import HERE, TALLY, LaggingStore, tally_service

BROKEN = HERE / "apps" / "broken"


@pytest.mark.parametrize(
    ("command", "stem"),
    [
        ("open account", "open_account"),
        ("Settle  Transfer!", "settle_transfer"),
        ("v2.add", "v2_add"),
    ],
)
def test_a_command_names_its_sheets(command: str, stem: str) -> None:
    assert sheet_name(command) == stem


def test_a_command_without_letters_or_digits_cannot_name_sheets() -> None:
    with pytest.raises(ConfigError, match="no letters or digits"):
        sheet_name("?!")


def test_sheets_are_found_by_convention_beside_the_app(micro_settings: Settings) -> None:
    tally = tally_service(micro_settings, commands=("add",))
    rule = tally.commander.rules["add"]
    assert rule.path == TALLY / "rules" / "add_rule.py"
    assert rule.description.startswith("Add an amount to a tally")
    assert [event.type_name() for event in rule.event_types] == ["Added"]
    assert list(tally.commander.reducers) == ["Added"]
    assert tally.commander.models.names() == ["tally"]
    assert tally.endpoints["add"].kind == "command"
    assert tally.endpoints["tally"].kind == "view"


def test_models_of_a_folder_load_once_for_all_its_commands(micro_settings: Settings) -> None:
    tally = tally_service(micro_settings, commands=("add", "mark", "poison", "explode"))
    assert tally.commander.models.names() == ["tally"]


def test_the_same_sheet_loaded_by_two_services_is_one_module(micro_settings: Settings) -> None:
    one = tally_service(micro_settings, commands=("add",))
    two = tally_service(micro_settings, commands=("add",))
    assert one.commander.rules["add"].request is two.commander.rules["add"].request


def test_a_missing_rule_sheet_names_the_expected_path(micro_settings: Settings) -> None:
    micro = Micro(micro_settings, service="broken", app_dir=BROKEN)
    with pytest.raises(ConfigError) as raised:
        micro.commander.add_command("close account")
    assert str(BROKEN / "rules" / "close_account_rule.py") in str(raised.value)
    assert "does not exist" in str(raised.value)


def test_a_missing_reducer_sheet_names_the_expected_path(micro_settings: Settings) -> None:
    micro = Micro(micro_settings, service="broken", app_dir=BROKEN)
    with pytest.raises(ConfigError) as raised:
        micro.commander.add_command("no reducer")
    assert str(BROKEN / "reducers" / "no_reducer_reducer.py") in str(raised.value)
    assert "no reducer" not in micro.endpoints


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        ("no request", "missing 'class Request(BaseModel)'"),
        ("no events", "missing the function events()"),
        ("no stream", "missing the function stream()"),
        ("bad auth", "auth must be 'required', 'optional' or 'none', not 'maybe'"),
        ("events arity", "events() must take 2 argument(s)"),
    ],
)
def test_a_malformed_rule_sheet_is_a_config_error_naming_it(
    micro_settings: Settings, command: str, complaint: str
) -> None:
    micro = Micro(micro_settings, service="broken", app_dir=BROKEN)
    with pytest.raises(ConfigError) as raised:
        micro.commander.add_command(command)
    message = str(raised.value)
    assert str(BROKEN / "rules" / f"{sheet_name(command)}_rule.py") in message
    assert complaint in message


@pytest.mark.parametrize(
    ("command", "complaint"),
    [
        ("no mapping", "missing 'reducers = {EventType: function, ...}'"),
        ("bad mapping", "42 is neither an Event class nor a name"),
    ],
)
def test_a_malformed_reducer_sheet_is_a_config_error_naming_it(
    micro_settings: Settings, command: str, complaint: str
) -> None:
    micro = Micro(micro_settings, service="broken", app_dir=BROKEN)
    with pytest.raises(ConfigError) as raised:
        micro.commander.add_command(command)
    assert str(BROKEN / "reducers" / f"{sheet_name(command)}_reducer.py") in str(raised.value)
    assert complaint in str(raised.value)


def test_a_sheet_that_fails_to_import_is_a_config_error_with_the_cause(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    sheet = tmp_path / "rules" / "typo_rule.py"
    sheet.write_text("from pydantic import BaseModel\n\nclass Request(BaseModel)\n    id: str\n")
    with pytest.raises(ConfigError) as raised:
        load_rule_sheet(tmp_path, "typo")
    assert f"{sheet} failed to load: SyntaxError" in str(raised.value)
    sheet.write_text("import not_a_module_anywhere\n")
    with pytest.raises(ConfigError, match="ModuleNotFoundError"):
        load_rule_sheet(tmp_path, "typo")  # fixed or not, a failed load is not cached


def test_a_malformed_model_sheet_names_its_path(micro_settings: Settings) -> None:
    folder = HERE / "apps" / "bad_model"
    micro = Micro(micro_settings, service="broken", app_dir=folder)
    with pytest.raises(ConfigError) as raised:
        micro.commander.add_command("anything")
    assert str(folder / "models" / "thing_model.py") in str(raised.value)
    assert "missing 'record = <pydantic model class>'" in str(raised.value)


def test_a_command_added_twice_is_a_config_error(micro_settings: Settings) -> None:
    tally = tally_service(micro_settings, commands=("add",))
    with pytest.raises(ConfigError, match="added twice"):
        tally.commander.add_command("add")


class Doubled(Event):
    id: str
    value: int


class Number(BaseModel):
    id: str
    value: int


def _double_rule() -> types.SimpleNamespace:
    class Request(BaseModel):
        id: str
        value: int

    return types.SimpleNamespace(
        Request=Request,
        Doubled=Doubled,
        stream=lambda request: f"number-{request.id}",
        events=lambda request, models: [Doubled(id=request.id, value=request.value * 2)],
        respond=lambda request, models, events: models.number.require(request.id).value,
    )


def _on_doubled(event: AppliedEvent, models) -> None:
    models.number.put({"id": event.data.id, "value": event.data.value})


@pytest.mark.parametrize("form", ["module and dict", "rule sheet and reducer module"])
async def test_rules_and_reducers_may_be_given_as_objects(
    micro_settings: Settings, tmp_path: Path, form: str
) -> None:
    micro = Micro(micro_settings, service="numbers", app_dir=tmp_path)  # no sheets there
    micro.commander.add_model(Model("number", Number))
    rule = _double_rule()
    if form == "module and dict":
        micro.commander.add_command("double", rule=rule, reducer={Doubled: _on_doubled})
    else:
        sheet = RuleSheet.from_module("double", rule, Path("<double>"))
        reducer = types.SimpleNamespace(reducers={"Doubled": _on_doubled})
        micro.commander.add_command("double", rule=sheet, reducer=reducer)
    micro.commander.store = LaggingStore()
    async with micro, Micro(micro_settings) as client:
        assert await client.act("double", {"id": "n", "value": 21}) == 42
        with pytest.raises(ValidationError):
            await client.act("double", {"id": "n"})


def test_a_reducer_object_without_a_mapping_is_a_config_error(micro_settings: Settings) -> None:
    micro = Micro(micro_settings, service="numbers", app_dir=TALLY)
    with pytest.raises(ConfigError, match="no 'reducers' mapping"):
        micro.commander.add_command("double", rule=_double_rule(), reducer=object())


def test_a_view_must_take_query_and_models(micro_settings: Settings) -> None:
    micro = Micro(micro_settings, service="numbers")
    with pytest.raises(TypeError, match="must take"):
        micro.add_view("count", lambda models: 1)
    with pytest.raises(TypeError, match="not callable"):
        micro.add_view("count", 1)  # type: ignore[arg-type]


class TallyQuery(BaseModel):
    id: str


async def test_a_typed_view_validates_its_query(
    micro_settings: Settings, store: LaggingStore
) -> None:
    def by_id(query: TallyQuery, models) -> dict:
        found = models.tally.get(query.id)
        return found.model_dump() if found else {}

    tally = tally_service(micro_settings, store)
    tally.add_view("tally by id", by_id)
    async with tally, Micro(micro_settings) as client:
        await client.act("add", {"id": "a", "amount": 3})
        assert await client.act("tally by id", {"id": "a"}) == {"id": "a", "total": 3, "count": 1}
        with pytest.raises(ValidationError) as raised:
            await client.act("tally by id", {"id": 3})
    assert raised.value.details["fields"][0]["field"] == "id"
