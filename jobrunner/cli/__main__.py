"""`python -m jobrunner.cli`: the command line, every command through typer."""

from jobrunner.cli import main

main()
