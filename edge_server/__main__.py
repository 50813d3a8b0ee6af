"""`python -m edge_server ...` is `tandem edge serve ...`."""

import sys

from edge_server.commands import register
from tandem.commands import run_package_command

if __name__ == "__main__":
    sys.exit(run_package_command(register, ["edge", "serve"], "python -m edge_server"))
