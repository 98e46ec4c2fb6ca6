from tpmseal.client.tpm import Tpm


def test_get_random(tpm: Tpm) -> None:
    a, b = tpm.get_random(32), tpm.get_random(32)
    assert len(a) == 32 and a != b
