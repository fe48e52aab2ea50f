from pydantic import BaseModel


class Payment(BaseModel):
    id: str
    amount: int
    currency: str


record = Payment
