"""tpmseal.records: the cheap frozen records that replace dataclasses on the CLI's path."""

from __future__ import annotations

import dataclasses

import pytest

from tpmseal.records import (
    FrozenRecordError,
    field,
    fields,
    is_record,
    mutable_record,
    record,
    replace,
)


@record
class Point:
    x: int
    y: int = 0
    tags: tuple[str, ...] = field(default_factory=tuple)
    secret: bytes = field(default=b"", repr=False, metadata={"kind": "demo"})


@record
class Labelled(Point):
    label: str = "p"


@record
class Quiet:
    data: bytes

    def __repr__(self) -> str:
        return f"Quiet(<{len(self.data)} bytes>)"


@dataclasses.dataclass(frozen=True)
class RealDataclass:
    a: int
    b: int = 2


def test_init_defaults_and_factory() -> None:
    p = Point(1)
    assert (p.x, p.y, p.tags, p.secret) == (1, 0, (), b"")
    assert Point(1, 2, ("a",), b"k") == Point(x=1, y=2, tags=("a",), secret=b"k")


def test_bad_arguments_are_type_errors() -> None:
    with pytest.raises(TypeError, match="missing argument 'x'"):
        Point()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="unexpected keyword"):
        Point(1, z=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values"):
        Point(1, x=2)  # type: ignore[misc]
    with pytest.raises(TypeError, match="positional"):
        Point(1, 2, (), b"", 5)  # type: ignore[call-arg]


def test_frozen() -> None:
    p = Point(1)
    with pytest.raises(FrozenRecordError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del p.x


def test_eq_hash_repr() -> None:
    assert Point(1) == Point(1) and Point(1) != Point(2)
    assert Point(1) != Labelled(1)  # another class is never equal
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert repr(Point(1, secret=b"key")) == "Point(x=1, y=0, tags=())"
    assert repr(Quiet(b"abc")) == "Quiet(<3 bytes>)"


def test_inheritance_puts_base_fields_first() -> None:
    assert [f.name for f in fields(Labelled)] == ["x", "y", "tags", "secret", "label"]
    assert Labelled(1, label="q").label == "q"


def test_fields_replace_is_record_on_records_and_dataclasses() -> None:
    assert [f.name for f in fields(Point(1))] == ["x", "y", "tags", "secret"]
    assert fields(Point)[3].metadata == {"kind": "demo"}
    assert replace(Point(1, 2), y=5) == Point(1, 5)
    assert [f.name for f in fields(RealDataclass)] == ["a", "b"]
    assert replace(RealDataclass(1), b=3) == RealDataclass(1, 3)
    assert is_record(Point) and is_record(Point(1)) and is_record(RealDataclass(1))
    assert not is_record(object())
    with pytest.raises(TypeError):
        fields(object())


def test_match_args() -> None:
    match Point(3, 4):
        case Point(x, y):
            assert (x, y) == (3, 4)


@mutable_record
class Counter:
    name: str
    n: int = 0


def test_mutable_record_assigns_and_compares_by_identity() -> None:
    c = Counter("a")
    c.n += 1
    assert c.n == 1 and repr(c) == "Counter(name='a', n=1)"
    assert c != Counter("a", 1) and len({c, Counter("a", 1)}) == 2
