"""`python -m ptools` runs the CLI (also how torchrun starts `ptools train`)."""

from ptools.cli import main

if __name__ == "__main__":
    main()
