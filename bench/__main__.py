"""``python -m bench`` runs every CPU benchmark."""

from bench.run_all import main

main()
