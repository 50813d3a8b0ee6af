"""`python -m linkemu ...` is `tandem linkemu serve ...`."""

import sys

from tandem.cli import main

if __name__ == "__main__":
    sys.exit(main(["linkemu", "serve", *sys.argv[1:]]))
