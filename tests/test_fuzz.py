"""Property: every parser of untrusted bytes returns or raises a typed TpmsealError.

Hypothesis drives the structure-aware mutators of tests/fuzzing.py from real
seeds (a capture of provision, probe, seal, unseal, reseal, PCR and NV flows
on swtpm, the blob and trust file they wrote). This is the short run (a few
seconds); ``make fuzz`` runs the same targets for 10^6+ inputs.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import start_copy
from fuzzing import Seeds, Target, collect_seeds, mutate_for, targets
from tpmseal.errors import TpmsealError
from tpmseal.wire.commands import REGISTRY

EXAMPLES = 15


@pytest.fixture(scope="module")
def seeds(tcg_template: object) -> Iterator[Seeds]:
    from pathlib import Path

    assert isinstance(tcg_template, Path)
    sim = start_copy(tcg_template)
    try:
        yield collect_seeds(sim.uri, sim.state / "trust.json", sim.state)
    finally:
        sim.stop()
        shutil.rmtree(sim.state, ignore_errors=True)


_TARGETS: dict[str, tuple[Target, list[bytes]]] = {}


@pytest.fixture(scope="module")
def all_targets(seeds: Seeds) -> dict[str, tuple[Target, list[bytes]]]:
    _TARGETS.update(targets(seeds))  # a global: hypothesis would print a fixture argument
    return _TARGETS


def test_seeds_cover_the_flows(seeds: Seeds, all_targets: dict[str, object]) -> None:
    names = {int.from_bytes(c[6:10], "big") for c, _ in seeds.exchanges}
    assert len(names) >= 15 and seeds.blob and seeds.trust
    assert {f"response:{cls.__name__}" for cls in REGISTRY.values()} <= set(all_targets)
    for fmt in ("jsonl", "pcap", "pcapng", "raw"):
        assert f"capture:{fmt}" in all_targets


def test_seeds_parse(all_targets: dict[str, tuple[Target, list[bytes]]]) -> None:
    """The unmutated seeds are valid input for the capture, blob and trust targets."""
    for name in ("capture:jsonl", "capture:pcap", "capture:pcapng", "capture:raw", "blob",
                 "trust"):
        fn, pool = all_targets[name]
        for seed in pool:
            fn(seed)


def _check(fn: Target, data: bytes) -> None:
    try:
        fn(data)
    except TpmsealError as e:
        assert "\n" not in e.one_line()


GROUPS = ["response", "sniff-response", "sniff-command", "capture", "blob", "trust", "public",
          "pcrspec", "uri", "secret-spec"]


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(data=st.data())
def _typed_errors_only(group: str, data: st.DataObject) -> None:
    names = sorted(n for n in _TARGETS if n.split(":")[0] == group)
    name = data.draw(st.sampled_from(names), label="target")
    fn, pool = _TARGETS[name]
    seed = data.draw(st.sampled_from(pool), label="seed")
    rng = random.Random(data.draw(st.integers(0, 2**32), label="mutation"))
    for _ in range(8):  # a few mutants per drawn case keep hypothesis' overhead small
        _check(fn, mutate_for(name, rng, seed, pool))


@pytest.mark.parametrize("group", GROUPS)
def test_parsers_raise_only_typed_errors(all_targets: dict[str, object], group: str) -> None:
    _typed_errors_only(group)
