"""`python -m offrl.cli ...`, as the `offrl` script."""

from offrl.cli import main

main()
