"""The ``batchkit`` command: the same program as the Rust binary, run in
this process (same flags, output and exit statuses)."""

import signal
import sys

from . import _native


def main() -> None:
    """Run ``batchkit`` with this process's arguments and exit with its status."""
    # Ctrl-C and a closed pipe behave as for the Rust binary: not as
    # Python exceptions raised between two calls into Rust.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    if hasattr(signal, "SIGPIPE"):
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(_native.main(["batchkit", *sys.argv[1:]]))
