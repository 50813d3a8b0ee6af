"""`python -m device_client ...` is `tandem generate ...`."""

import sys

from tandem.cli import main

if __name__ == "__main__":
    sys.exit(main(["generate", *sys.argv[1:]]))
