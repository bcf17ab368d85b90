"""``python -m diffeoprobe``."""

from diffeoprobe.cli import main

main()
