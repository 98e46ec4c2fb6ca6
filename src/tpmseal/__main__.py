"""``python -m tpmseal``: the same as the ``tpmseal`` command."""

from tpmseal.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
