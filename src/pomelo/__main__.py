"""`python -m pomelo` is the `pomelo` command."""

from pomelo.cli import main

main()
