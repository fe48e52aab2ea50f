"""Transfers between accounts and how far each has got."""

from typing import Literal

from pydantic import BaseModel


class Transfer(BaseModel):
    id: str
    source: str
    target: str
    amount: int
    status: Literal["requested", "debited", "completed", "failed"] = "requested"
    reason: str = ""


record = Transfer
key = "id"
indexes = ["status"]
