"""Running totals, one per tally id."""

from pydantic import BaseModel


class Tally(BaseModel):
    id: str
    total: int = 0
    count: int = 0


record = Tally
key = "id"
