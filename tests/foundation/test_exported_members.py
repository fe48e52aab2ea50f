import types

import micro


def test_all_lists_exactly_the_public_names_the_package_defines() -> None:
    defined = {
        name
        for name, member in vars(micro).items()
        if not name.startswith("_")
        and not isinstance(member, types.ModuleType)
        and getattr(member, "__module__", "").startswith("micro")
    }
    assert set(micro.__all__) - {"__version__"} == defined
    assert micro.__all__ == sorted(micro.__all__)
