"""`python -m dancegen ...` is the `dancegen` command."""

from dancegen.cli import main

main()
