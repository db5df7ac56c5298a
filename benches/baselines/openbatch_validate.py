"""openbatch's validator (PyPI `openbatch`), as its README shows it."""
import sys

from openbatch.validation import validate_batch_file

result = validate_batch_file(sys.argv[1])
print(f"valid={result.is_valid} errors={len(result.errors)}", file=sys.stderr)
