"""Capture file formats, side by side: what ``tpmseal sniff`` writes and ``tpmseal decode`` reads.

:mod:`.jsonl` (JSON lines), :mod:`.pcap` (writer) and :mod:`.pcapread`
(pcap/pcapng reader), :mod:`.output` (files created private) and
:mod:`.offline` (``tpmseal decode``: pick the reader, replay the session tracker).
"""
