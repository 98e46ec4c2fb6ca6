"""cli/main.py main: the cyclic collector is off while a command's modules load, on for the
command itself (which may be a long capture), and left as the caller had it."""

from __future__ import annotations

import argparse
import gc

import pytest

from test_seal_support import cli
from tpmseal.cli import seal


@pytest.mark.parametrize("enabled", [True, False])
def test_collector_runs_for_the_command_and_is_restored(monkeypatch: pytest.MonkeyPatch,
                                                        enabled: bool) -> None:
    seen: dict[str, object] = {}

    def handler(args: argparse.Namespace) -> int:
        seen.update(enabled=gc.isenabled(), frozen=gc.get_freeze_count() > 0)
        return 0

    monkeypatch.setattr(seal, "run_unseal", handler)
    if not enabled:
        gc.disable()
    try:
        assert cli(["unseal", "--input", "blob.json"]).rc == 0
        assert seen == {"enabled": enabled, "frozen": enabled}
        assert gc.isenabled() is enabled
        assert gc.get_freeze_count() == 0
    finally:
        gc.enable()


def test_collector_is_restored_after_a_usage_error() -> None:
    assert cli(["unseal", "--no-such-option"]).rc == 2
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_a_callers_frozen_objects_stay_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seal, "run_unseal", lambda args: 0)
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        assert frozen > 0
        assert cli(["unseal", "--input", "blob.json"]).rc == 0
        assert gc.get_freeze_count() == frozen and gc.isenabled()
    finally:
        gc.unfreeze()
