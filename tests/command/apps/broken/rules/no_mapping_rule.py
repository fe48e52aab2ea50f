from pydantic import BaseModel


class Request(BaseModel):
    id: str


def stream(request) -> str:
    return "x"


def events(request, models) -> list:
    return []
