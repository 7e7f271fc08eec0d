"""Stand-in for the pip bootstrap script ansible-test downloads from its own file host, which this
machine cannot reach (only the package registries are): it installs pip from the wheel bundled
with Python (ensurepip), then the pinned packages ansible-test asks for from PyPI.

ansible-test runs it as `python quiet_pip.py <pip install options> pip==X ...` with GET_PIP set to
this file's cached copy; tests/ansible/sanity.sh puts it where ansible-test looks for it.
"""

import ensurepip
import os
import subprocess
import sys

# ensurepip sets PIP_CONFIG_FILE=/dev/null in os.environ and leaves it there: the install below
# must see the machine's pip configuration (index, certificates), so it gets the caller's.
env = dict(os.environ)
ensurepip.bootstrap()
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install"] + args, env=env))
