"""``python -m submask`` runs the command line."""

from .cli import main

main()
