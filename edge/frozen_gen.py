"""Writes `edge/frozen.py`: a copy, as msgspec structs, of every validating model the running agent
reads (the configuration's `edge.config.EdgeConfig` and the profiles' `device_profiles.model.Profile`,
with everything they hold).

The models stay the one definition: they validate, and report every problem with its file and
key. The agent runs on data they have already validated (`edge.handoff`), so its copy needs only
the fields, their types and the models' read-only members (the same base classes, which are
pydantic-free), not the validators: the running agent never imports pydantic. A test compares the
file with a fresh rendering, so a change to a model that is not carried over fails ``make test``;
``python -m edge.frozen_gen`` rewrites it.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, SecretStr

FROZEN = Path(__file__).with_name("frozen.py")

_HEADER = '''"""Copies of the validating models the running agent reads, as msgspec structs: the same fields
and read-only members, no validators. Written by `edge.frozen_gen` (``python -m edge.frozen_gen``)
from `edge.config` and `device_profiles.model`: do not edit. `edge.handoff` fills them with data
those models validated.
"""

# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

'''


def _roots() -> tuple[type[BaseModel], ...]:
    from device_profiles.model import Profile
    from edge.config import EdgeConfig

    return (EdgeConfig, Profile)


class _Renderer:
    def __init__(self) -> None:
        self.order: list[type[BaseModel]] = []
        self.fields: dict[type[BaseModel], list[tuple[str, str]]] = {}
        self.names: dict[str, type[BaseModel]] = {}
        #: the pydantic-free classes the copies use: read-only members as bases, and `Secret`
        self.imports: dict[type, None] = {}

    def visit(self, model: type[BaseModel]) -> None:
        if model in self.fields:
            return
        other = self.names.setdefault(model.__name__, model)
        if other is not model:
            raise TypeError(f"two models named {model.__name__}: {other.__module__} and {model.__module__}")
        self.fields[model] = []  # visited (a model may refer to itself)
        parent = self.parent(model)
        if parent is not None:
            self.visit(parent)
        inherited = {} if parent is None else parent.model_fields
        self.fields[model] = [
            (name, self.type_of(info.annotation))
            for name, info in model.model_fields.items()
            if name not in inherited or inherited[name].annotation != info.annotation
        ]
        for base in self.members(model):
            if base.__dict__.get("__slots__") != ():
                raise TypeError(f"{base.__qualname__}, a base of {model.__name__}, needs __slots__ = ()")
            self.imports[base] = None
        self.order.append(model)

    @staticmethod
    def parent(model: type[BaseModel]) -> type[BaseModel] | None:
        """The nearest base model with fields: its copy is the base of this model's copy."""
        return next((b for b in model.__mro__[1:] if issubclass(b, BaseModel) and b.model_fields), None)

    def members(self, model: type[BaseModel]) -> list[type]:
        """The model's own pydantic-free bases (not its parent's): read-only members (properties)."""
        inherited = () if (parent := self.parent(model)) is None else parent.__mro__
        return [
            b
            for b in model.__mro__[1:]
            if not issubclass(b, BaseModel) and b is not object and b not in inherited
        ]

    def type_of(self, tp: Any) -> str:
        if tp is type(None):
            return "None"
        if tp is Any:
            return "Any"
        if tp in (bool, int, float, str, bytes):
            return str(tp.__name__)
        if tp is Path:
            return "Path"
        if tp is SecretStr:
            from device_profiles.config_view import Secret

            self.imports[Secret] = None
            return "Secret"
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            self.visit(tp)
            return tp.__name__
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            return self.type_of(args[0])
        if origin in (Union, types.UnionType):
            return " | ".join(dict.fromkeys(self.type_of(a) for a in args))
        if origin is Literal:
            return f"Literal[{', '.join(json.dumps(a) for a in args)}]"
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return f"tuple[{self.type_of(args[0])}, ...]"
        if origin in (tuple, list, dict):
            return f"{origin.__name__}[{', '.join(self.type_of(a) for a in args)}]"
        raise TypeError(f"no msgspec copy for the annotation {tp!r}")

    def render(self) -> str:
        by_module: dict[str, list[str]] = {}
        for cls in self.imports:
            by_module.setdefault(cls.__module__, []).append(cls.__name__)
        out = [_HEADER]
        out.extend(f"from {m} import {', '.join(sorted(names))}\n" for m, names in sorted(by_module.items()))
        for model in self.order:
            parent = self.parent(model)
            bases = [b.__name__ for b in self.members(model)]
            bases.append("msgspec.Struct" if parent is None else parent.__name__)
            out.append(f"\n\nclass {model.__name__}({', '.join(bases)}, {_OPTIONS}):\n")
            out.extend(f"    {name}: {tp}\n" for name, tp in self.fields[model])
            if not self.fields[model]:
                out.append("    pass\n")
        return "".join(out)


_OPTIONS = "frozen=True, kw_only=True, forbid_unknown_fields=True"


def render() -> str:
    """The text `edge/frozen.py` must hold."""
    renderer = _Renderer()
    for root in _roots():
        renderer.visit(root)
    return renderer.render()


def main() -> int:
    FROZEN.write_text(render())
    print(f"wrote {FROZEN}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
