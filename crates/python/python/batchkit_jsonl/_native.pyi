"""Types of the Rust extension module (``crates/python/src/lib.rs``)."""

from typing import Iterator, List, Optional, Tuple

__version__: str

class BatchkitError(Exception):
    """A command could not do its job: bad arguments, a file that cannot be read or written."""

def main(argv: List[str]) -> int:
    """Run ``batchkit`` with ``argv`` (the program's name first) in this process: the exit status."""

def validate(args: List[str], data: Optional[bytes] = None) -> Tuple[int, Optional[str]]:
    """``batchkit validate ARGS`` of a file, or of ``data``: exit status and JSON report."""

def split(args: List[str]) -> Tuple[int, Optional[str]]:
    """``batchkit split ARGS``: exit status, and the manifest or why nothing was split, as JSON."""

def stats(args: List[str]) -> Tuple[int, Optional[str]]:
    """``batchkit stats ARGS``: exit status and the statistics as JSON."""

def merge_to(args: List[str]) -> Tuple[int, Optional[str]]:
    """``batchkit merge ARGS``: exit status and the summary as JSON."""

def retry(args: List[str]) -> Tuple[int, Optional[str]]:
    """``batchkit retry ARGS``: exit status and the summary as JSON."""

class MergeLines(Iterator[bytes]):
    """Merged lines in blocks of whole lines, made on a thread of their own."""

    def __init__(self, requests: List[str], results: List[str], with_request: bool = False, text: bool = False) -> None: ...
    def __iter__(self) -> "MergeLines": ...
    def __next__(self) -> bytes: ...
