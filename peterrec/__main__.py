"""``python -m peterrec ...``: the same command line as the ``peterrec`` entry point."""

from peterrec.commands.cli import main

if __name__ == "__main__":
    main()
