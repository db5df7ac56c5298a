"""The plain Python baseline: json.loads every line, keep a set of custom_ids.
With --orjson, the fastest loop a Python user would write: the same with
orjson.loads."""
import json
import sys

args = sys.argv[1:]
loads = json.loads
if args[0] == "--orjson":
    import orjson

    loads = orjson.loads
    args = args[1:]
seen = set()
duplicates = 0
lines = 0
with open(args[0], "rb") as f:
    for line in f:
        lines += 1
        request = loads(line)
        custom_id = request["custom_id"]
        if custom_id in seen:
            duplicates += 1
        seen.add(custom_id)
print(f"{lines} lines, {duplicates} duplicates", file=sys.stderr)
