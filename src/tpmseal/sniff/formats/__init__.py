"""Capture file formats, side by side: what ``tpmseal sniff`` writes and ``tpmseal decode`` reads.

:mod:`.jsonl` (JSON lines), :mod:`.pcap` (writer) and :mod:`.pcapread`
(pcap/pcapng reader), :mod:`.output` (files created private) and
:mod:`.offline` (``tpmseal decode``: pick the reader, replay the session tracker).
Logic-analyser captures of a TPM bus: :mod:`.sigrok` (sigrok-cli decoder
output), :mod:`.saleae` (Logic 2 SPI CSV), :mod:`.logic` (VCD/.sr channels,
running sigrok-cli), :mod:`.buses` (detection and dispatch).
"""
