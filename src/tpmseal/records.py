"""Frozen record classes that cost next to nothing to define.

``@record`` is what tpmseal uses instead of ``@dataclass(frozen=True)`` on the
~100 classes every ``tpmseal unseal`` imports (the command registry, the TPM
structures, frames). :mod:`dataclasses` generates and ``exec``s source code for
``__init__``, ``__repr__``, ``__eq__`` and ``__hash__`` of each class and imports
:mod:`inspect`: about a third of a millisecond per class, and a third of the
CLI's start-up. A record instead reads its fields from the class annotations
(in declaration order, bases first) and shares one generic implementation of
each method; type checkers see it as a frozen dataclass (PEP 681).

:func:`fields`, :func:`replace` and :func:`is_record` work on records and on
real dataclasses alike, so code that walks either (the sniffer's renderer, the
tests) need not tell them apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:  # typing.dataclass_transform is Python >= 3.11; the stub knows it
    from typing_extensions import dataclass_transform
else:
    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda f: f


class Parametric:
    """What hot modules subclass instead of ``typing.Generic`` at run time, where
    ``C[X]`` is ``C`` itself; type checkers are shown ``Generic`` (see wire/codecs.py).

    Each ``class Load(Command[LoadResponse])`` on a real Generic makes a typing
    alias object and runs typing's subclass hooks: ~25 us per class, over a
    millisecond for the command registry and codecs.
    """

    def __class_getitem__(cls, params: object) -> type:
        return cls

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class FrozenRecordError(AttributeError):
    """Assignment to a field of a frozen record."""


class Field:
    """One field of a record: its name, default (or factory), repr flag and metadata."""

    __slots__ = ("default", "default_factory", "metadata", "name", "repr")

    def __init__(self, default: Any = MISSING, default_factory: Any = MISSING,
                 repr: bool = True, metadata: Mapping[str, Any] | None = None) -> None:
        self.name = ""
        self.default = default
        self.default_factory = default_factory
        self.repr = repr
        self.metadata: Mapping[str, Any] = _EMPTY if metadata is None else metadata

    def __repr__(self) -> str:
        return f"Field({self.name!r})"


def field(*, default: Any = MISSING, default_factory: Callable[[], Any] | Any = MISSING,
          repr: bool = True, metadata: Mapping[str, Any] | None = None) -> Any:
    """Declare a field with a default, a default factory, ``repr=False`` or metadata."""
    return Field(default, default_factory, repr, metadata)


def _own_fields(cls: type) -> list[Field]:
    found = []
    # the class's own annotations, without importing inspect (get_annotations)
    own: dict[str, Any] = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
    for name, annotation in own.items():
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if text.startswith(("ClassVar", "typing.ClassVar")):
            continue
        value = cls.__dict__.get(name, MISSING)
        f = value if isinstance(value, Field) else Field(default=value)
        f.name = name
        if isinstance(value, Field):
            if f.default is MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, f.default)
        found.append(f)
    return found


@dataclass_transform(frozen_default=True, field_specifiers=(field,))
def record(cls: type[T]) -> type[T]:
    """Make *cls* a frozen record: ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``."""
    return _make(cls, frozen=True)


@dataclass_transform(eq_default=False, field_specifiers=(field,))
def mutable_record(cls: type[T]) -> type[T]:
    """Make *cls* a mutable record: ``__init__`` and ``__repr__``; identity ``==``."""
    return _make(cls, frozen=False)


def _make(cls: type[T], frozen: bool) -> type[T]:
    inherited: dict[str, Field] = {}
    for base in reversed(cls.__mro__[1:]):
        inherited.update(getattr(base, "__record_fields__", {}))
    for f in _own_fields(cls):
        inherited[f.name] = f
    own = cls.__dict__
    methods: dict[str, Any] = {
        "__record_fields__": inherited, "__record_names__": tuple(inherited),
        "__match_args__": tuple(inherited), "__init__": _init}
    if "__repr__" not in own:
        methods["__repr__"] = _repr
    if frozen:
        methods.update(__setattr__=_setattr, __delattr__=_delattr)
        if "__eq__" not in own:
            methods["__eq__"] = _eq
        if own.get("__hash__") is None:
            methods["__hash__"] = _hash
    for name, value in methods.items():
        setattr(cls, name, value)
    return cls


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    spec: dict[str, Field] = type(self).__record_fields__
    names: tuple[str, ...] = type(self).__record_names__
    if len(args) > len(names):
        raise TypeError(f"{type(self).__name__}() takes {len(names)} positional arguments "
                        f"but {len(args)} were given")
    put = object.__setattr__
    for name, value in zip(names, args, strict=False):
        put(self, name, value)
    for name in names[len(args):]:
        if name in kwargs:
            put(self, name, kwargs.pop(name))
            continue
        f = spec[name]
        if f.default is not MISSING:
            put(self, name, f.default)
        elif f.default_factory is not MISSING:
            put(self, name, f.default_factory())
        else:
            raise TypeError(f"{type(self).__name__}() missing argument {name!r}")
    if kwargs:
        extra = next(iter(kwargs))
        if extra in names[:len(args)]:
            raise TypeError(f"{type(self).__name__}() got multiple values for {extra!r}")
        raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {extra!r}")
    post = getattr(self, "__post_init__", None)
    if post is not None:
        post()


def _setattr(self: Any, name: str, value: Any) -> None:
    raise FrozenRecordError(f"cannot assign to field {name!r} of a frozen record")


def _delattr(self: Any, name: str) -> None:
    raise FrozenRecordError(f"cannot delete field {name!r} of a frozen record")


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, n) for n in type(self).__record_names__)


def _repr(self: Any) -> str:
    shown = (f"{f.name}={getattr(self, f.name)!r}"
             for f in type(self).__record_fields__.values() if f.repr)
    return f"{type(self).__qualname__}({', '.join(shown)})"


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented  # type: ignore[no-any-return]
    return bool(_values(self) == _values(other))


def _hash(self: Any) -> int:
    return hash(_values(self))


def is_record(obj: object) -> bool:
    """True for a record or dataclass (class or instance)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return hasattr(cls, "__record_fields__") or hasattr(cls, "__dataclass_fields__")


def fields(obj: object) -> tuple[Field, ...]:
    """The fields of a record (or, through :mod:`dataclasses`, a dataclass), in order."""
    cls = obj if isinstance(obj, type) else type(obj)
    spec: dict[str, Field] | None = getattr(cls, "__record_fields__", None)
    if spec is not None:
        return tuple(spec.values())
    if hasattr(cls, "__dataclass_fields__"):
        import dataclasses  # only for real dataclasses: off the CLI's hot path
        return tuple(_from_dataclass(f) for f in dataclasses.fields(cls))
    raise TypeError(f"{cls.__name__} is neither a record nor a dataclass")


def replace(obj: T, /, **changes: Any) -> T:
    """A copy of the record (or dataclass) *obj* with *changes* applied."""
    if hasattr(type(obj), "__record_fields__"):
        for name in type(obj).__record_names__:  # type: ignore[attr-defined]
            changes.setdefault(name, getattr(obj, name))
        return type(obj)(**changes)
    import dataclasses
    return dataclasses.replace(obj, **changes)  # type: ignore[type-var]


def _from_dataclass(f: Any) -> Field:
    out = Field(f.default, f.default_factory, f.repr, f.metadata)
    out.name = f.name
    return out
