from tpmseal.client.tpm import Tpm
from tpmseal.recipes import sealing, trust
from tpmseal.transport.simulator import Simulator


def test_get_random(tpm: Tpm) -> None:
    a, b = tpm.get_random(32), tpm.get_random(32)
    assert len(a) == 32 and a != b


def test_provisioned_round_trip(tcg_sim: Simulator) -> None:
    rec = trust.load(tcg_sim.state / "trust.json", "tcg")
    with Tpm.open(tcg_sim.uri) as t:
        blob = sealing.seal(t, b"k" * 32, trust=rec)
        assert sealing.unseal(t, blob) == b"k" * 32
