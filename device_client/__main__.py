"""`python -m device_client ...` is `tandem generate ...`."""

import sys

from device_client.commands import register
from tandem.commands import run_package_command

if __name__ == "__main__":
    sys.exit(run_package_command(register, ["generate"], "python -m device_client"))
