"""`python -m linkemu ...` is `tandem linkemu serve ...`."""

import sys

from linkemu.commands import register
from tandem.commands import run_package_command

if __name__ == "__main__":
    sys.exit(run_package_command(register, ["linkemu", "serve"], "python -m linkemu"))
