"""The plain Python baseline: json.loads every line, keep a set of custom_ids."""
import json
import sys

seen = set()
duplicates = 0
lines = 0
with open(sys.argv[1], "rb") as f:
    for line in f:
        lines += 1
        request = json.loads(line)
        custom_id = request["custom_id"]
        if custom_id in seen:
            duplicates += 1
        seen.add(custom_id)
print(f"{lines} lines, {duplicates} duplicates", file=sys.stderr)
