"""The TPM bus sniffer: framed proxy, decoder, leak scanner, captures, interposer hooks."""
