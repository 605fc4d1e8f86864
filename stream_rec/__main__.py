"""``python -m stream_rec`` = the ``stream-rec`` command."""

from stream_rec.cli import main

main()
