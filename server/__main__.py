"""``python -m server`` is ``tokenwire serve``, flags included."""

import sys

from server.cli import main

main(["serve", *sys.argv[1:]])
