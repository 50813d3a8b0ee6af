"""`python -m edge_server ...` is `tandem edge serve ...`."""

import sys

from tandem.cli import main

if __name__ == "__main__":
    sys.exit(main(["edge", "serve", *sys.argv[1:]]))
