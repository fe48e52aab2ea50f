"""No Request schema."""


def stream(request) -> str:
    return "x"


def events(request, models) -> list:
    return []
