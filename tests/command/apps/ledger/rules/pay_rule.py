"""Record a payment. Version 1 of Paid had no currency: those were all in euros."""

from pydantic import BaseModel

from micro.readmodel import Event, upcaster


class Request(BaseModel):
    id: str
    amount: int
    currency: str = "EUR"


class Paid(Event):
    schema_version = 2
    id: str
    amount: int
    currency: str


@upcaster("Paid", from_version=1)
def paid_in_euros(data: dict) -> dict:
    return {**data, "currency": "EUR"}


def stream(request: Request) -> str:
    return f"payment-{request.id}"


def events(request: Request, models) -> list[Event]:
    return [Paid(id=request.id, amount=request.amount, currency=request.currency)]
