"""``python -m daemon`` runs the personad command."""

from ._cli import main

main()
