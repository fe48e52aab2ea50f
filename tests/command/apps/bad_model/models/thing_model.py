from pydantic import BaseModel


class Thing(BaseModel):
    id: str


# forgot: record = Thing
