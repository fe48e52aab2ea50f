from pydantic import BaseModel


class Request(BaseModel):
    id: str


def stream(request) -> str:
    return "x"
