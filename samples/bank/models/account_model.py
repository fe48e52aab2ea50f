"""Bank accounts and their balances."""

from datetime import datetime

from pydantic import BaseModel


class Account(BaseModel):
    id: str
    owner: str
    balance: int = 0
    opened_at: datetime


record = Account
key = "id"
indexes = ["owner"]


def reset() -> list[Account]:
    return []
