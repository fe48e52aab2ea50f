"""A stream name built from bad request fields is the caller's error (400), not a 500."""

import pytest

from micro import Micro, ValidationError
from micro.command.sheets import RuleSheet
from micro.readmodel import Event


class Named(Event):
    name: str


def _rule() -> RuleSheet:
    from pydantic import BaseModel

    class Request(BaseModel):
        name: str

    return RuleSheet(
        command="name thing",
        request=Request,
        stream=lambda request: f"thing-{request.name}",
        events=lambda request, models: [Named(name=request.name)],
        event_types=[Named],
    )


async def test_a_request_naming_an_invalid_stream_gets_a_validation_error(micro_settings) -> None:
    service = Micro(micro_settings, service="things", event_store="memory")
    service.commander.add_command("name thing", rule=_rule(), reducer={})
    async with service:
        with pytest.raises(ValidationError, match="the stream it names, 'thing-a b'") as caught:
            await service.act("name thing", {"name": "a b"})
        assert caught.value.fields[0]["field"] == "payload"
        assert await service.act("name thing", {"name": "ok"}) == {
            "stream": "thing-ok",
            "position": 1,
            "events": ["Named"],
        }
        assert await service.commander.store.last_position() == 1  # the refused one stored nothing
