"""tpmseal: seal secrets into a TPM 2.0 without them crossing the bus in plaintext.

``__version__`` is the single source of the package version (pyproject.toml reads it).
"""

__version__ = "0.1.0"
