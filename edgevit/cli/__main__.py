"""``python -m edgevit.cli``: the same command as ``edgevit``."""

from . import main

main()
