"""`python -m controller ...` is `tandem controller serve ...`."""

import sys

from controller.commands import register
from tandem.commands import run_package_command

if __name__ == "__main__":
    sys.exit(run_package_command(register, ["controller", "serve"], "python -m controller"))
