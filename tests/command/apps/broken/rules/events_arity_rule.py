from pydantic import BaseModel


class Request(BaseModel):
    id: str


def stream(request) -> str:
    return "x"


def events(request) -> list:  # forgot the models
    return []
