"""Body codecs: JSON (the default, what ``$SRV`` tooling and nats.js clients speak) and
msgpack, chosen per request by the ``Micro-Codec`` header.

A caller whose settings name another codec than JSON encodes its request body with it and
says so in the header; the service decodes with it and answers in the same codec (the
reply carries the header too). Error replies stay JSON whatever the request's codec: the
NATS service-error convention and every tool reading it expect JSON.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec
from pydantic import BaseModel

from micro.bus import codec as json_codec
from micro.errors import BadRequestError, ValidationError

__all__ = ["CODECS", "DEFAULT_CODEC", "CodecName", "decode_body", "encode_body"]

CodecName = Literal["json", "msgpack"]
DEFAULT_CODEC: Final = "json"
CODECS: Final = ("json", "msgpack")


def _msgpack_default(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise NotImplementedError(f"Type is not msgpack serializable: {type(value).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_msgpack_default)
_decoder = msgspec.msgpack.Decoder()


def encode_body(value: Any, codec: str, *, what: str = "payload") -> bytes:
    """``value`` in ``codec``; ``ValidationError`` naming what cannot be encoded."""
    if codec == DEFAULT_CODEC:
        return json_codec.encode(value, what=what)
    if value is None:
        return b""
    try:
        return _encoder.encode(value)
    except (NotImplementedError, TypeError, OverflowError) as error:
        raise ValidationError(
            f"{what} cannot be encoded as {codec}: {error}",
            details={"fields": [{"field": what, "reason": str(error)}], "codec": codec},
        ) from error


def decode_body(data: bytes, codec: str | None, *, what: str = "body") -> Any:
    """The value ``data`` holds in ``codec`` (``None``: JSON); ``BadRequestError`` naming the
    codec when it is unknown or the bytes do not decode."""
    if codec is None or codec == DEFAULT_CODEC:
        return json_codec.decode(data, what=what)
    if codec not in CODECS:
        raise BadRequestError(
            f"unknown codec {codec!r} for the {what}: micro speaks {', '.join(CODECS)}",
            details={"codec": codec},
        )
    if not data:
        return None
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as error:
        raise BadRequestError(
            f"{what} is not valid {codec}: {error}", details={"codec": codec}
        ) from error
