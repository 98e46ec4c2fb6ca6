"""Analysis of TPM bus traffic, whatever captured it.

Sans-I/O: framing a byte stream into commands and responses
(:mod:`.framing`), the recorded exchange (:mod:`.record`), session tracking
and the decryption an observer can do (:mod:`.sessions`), the human dump
(:mod:`.render`, :mod:`.values`) and the leak scanner (:mod:`.leaks`);
TPM bus reassembly: the PTP FIFO and CRB interfaces (:mod:`.ptp`,
:mod:`.crb`) over register accesses (:mod:`.registers`) from the SPI, I2C
and LPC bus decoders (:mod:`.spi`, :mod:`.i2c`, :mod:`.lpc`).
Nothing here opens a socket or a file; :mod:`tpmseal.sniff.capture` and
:mod:`tpmseal.sniff.formats` build on it.
"""
