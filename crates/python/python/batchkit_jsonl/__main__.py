"""``python -m batchkit_jsonl``: the ``batchkit`` command."""

from ._cli import main

main()
