"""Capturing TPM bus traffic live: the recording proxy, its interposer hooks and sockets, the tap.

:mod:`.proxy` sits in front of swtpm, :mod:`.hooks` lets a test play an
active attacker, :mod:`.sockets` holds the socket plumbing and :mod:`.tap`
records in-process. Exchanges are handed to :mod:`tpmseal.sniff.analysis`.
"""
