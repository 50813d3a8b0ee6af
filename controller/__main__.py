"""`python -m controller ...` is `tandem controller serve ...`."""

import sys

from tandem.cli import main

if __name__ == "__main__":
    sys.exit(main(["controller", "serve", *sys.argv[1:]]))
