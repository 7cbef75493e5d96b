"""python -m tuneloop ... : same as the `tuneloop` console script."""

from tuneloop.cli.main import main

main()
