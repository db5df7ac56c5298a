"""batchkit: the JSONL files of LLM Batch APIs, from Python.

The same Rust code as the ``batchkit`` command (which this package installs
too), with the GIL released while it works::

    >>> import batchkit_jsonl as bk
    >>> report = bk.validate(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}}\\n')
    >>> report.valid, report.summary["requests"]
    (True, 1)

Every function takes the options of its command as keyword arguments
(``max_requests=`` is ``--max-requests``), and reports what the command's
``--format json`` prints, as objects.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

from . import _native
from ._native import BatchkitError

__all__ = [
    "BatchkitError",
    "Diagnostic",
    "InvalidInputError",
    "Report",
    "merge",
    "merge_to",
    "retry",
    "split",
    "stats",
    "validate",
]

__version__: str = _native.__version__

PathLike = Union[str, "os.PathLike[str]"]


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a request file, as ``validate --format json`` shows it.

    ``code`` is the service's error code where it has one
    (``duplicate_custom_id``, ``invalid_url``, ...), ``line`` the 1-based
    line (``None`` for the whole file), ``param`` the field at fault.
    """

    code: str
    message: str
    severity: str
    line: Optional[int] = None
    param: Optional[str] = None
    custom_id: Optional[str] = None
    hint: Optional[str] = None
    offset: Optional[int] = None

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Diagnostic":
        return cls(
            code=d["code"],
            message=d["message"],
            severity=d["severity"],
            line=d.get("line"),
            param=d.get("param"),
            custom_id=d.get("custom_id"),
            hint=d.get("hint"),
            offset=d.get("offset"),
        )


@dataclass(frozen=True)
class Report:
    """The verdict on one request file: ``valid`` (no error; warnings
    allowed), its ``errors`` and ``warnings``, and a ``summary`` (requests,
    bytes, endpoint, models, counts by code, the limits checked)."""

    file: str
    valid: bool
    errors: List[Diagnostic]
    warnings: List[Diagnostic]
    summary: Dict[str, Any] = field(repr=False)

    @classmethod
    def _from(cls, d: Dict[str, Any]) -> "Report":
        return cls(
            file=d["file"],
            valid=d["valid"],
            errors=[Diagnostic._from(e) for e in d["errors"]["data"]],
            warnings=[Diagnostic._from(w) for w in d["warnings"]["data"]],
            summary=d["summary"],
        )


class InvalidInputError(BatchkitError):
    """The input cannot be split: its validation ``report`` (with the
    errors' codes and lines), or the ``oversize`` lines that fit in no
    chunk (``[{"line": 7, "what": "..."}]``)."""

    def __init__(self, message: str, report: Optional[Report] = None, oversize: Optional[List[Dict[str, Any]]] = None):
        super().__init__(message)
        self.report = report
        self.oversize = oversize or []


def _flags(options: Dict[str, Any]) -> List[str]:
    """Keyword arguments as the command's flags: ``max_requests=5`` is
    ``--max-requests 5``, ``True`` a bare flag, a list the flag repeated."""
    args: List[str] = []
    for name, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                args += [flag, os.fspath(v) if isinstance(v, os.PathLike) else str(v)]
        else:
            args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return args


def _loaded(text: Optional[str]) -> Any:
    return json.loads(text) if text is not None else None


def validate(
    source: Union[PathLike, bytes],
    provider: str = "openai",
    endpoint: Optional[str] = None,
    *,
    strict: bool = False,
    name: str = "<bytes>",
    **limits: Any,
) -> Report:
    """Check a request file (a path, or its bytes) as the service would.

    ``limits`` are ``validate``'s: ``max_requests``, ``max_bytes``,
    ``max_embedding_inputs`` (0: no limit). An input with errors is a
    report with ``valid == False``, not an exception; a file that cannot be
    read raises :class:`BatchkitError`.

    >>> import batchkit_jsonl as bk
    >>> r = bk.validate(b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}}\\n' * 2)
    >>> r.valid, [(e.code, e.line) for e in r.errors]
    (False, [('duplicate_custom_id', 2)])
    """
    flags = _flags({"provider": provider, "endpoint": endpoint, "strict": strict, **limits})
    if isinstance(source, (bytes, bytearray, memoryview)):
        _, text = _native.validate([name, *flags], bytes(source))
    else:
        _, text = _native.validate([os.fspath(source), *flags])
    return Report._from(_loaded(text))


def stats(path: PathLike, provider: str = "openai", **options: Any) -> Dict[str, Any]:
    """Requests, bytes, tokens by model and, with prices, the cost of a
    request file: what ``stats --format json`` prints.

    ``options`` are ``stats``'s: ``price_input``/``price_output`` (USD per
    million tokens), ``price`` (``"MODEL=IN,OUT"``, a list for several),
    ``max_chunk_tokens``, ``encoding``, ``endpoint`` and the limits.
    """
    _, text = _native.stats([os.fspath(path), *_flags({"provider": provider, **options})])
    return _loaded(text)


def split(path: PathLike, out_dir: PathLike, provider: str = "openai", **options: Any) -> Dict[str, Any]:
    """Cut a request file into chunks that each fit every limit, written
    to ``out_dir`` with a ``manifest.json``; returns the manifest.

    ``options`` are ``split``'s: ``max_requests``, ``max_bytes``,
    ``max_chunk_tokens``, ``skip_invalid``, ``force``, ``dry_run``,
    ``endpoint``. An invalid input (without ``skip_invalid``) raises
    :class:`InvalidInputError` with its report; nothing is written then.
    """
    args = [os.fspath(path), "--out-dir", os.fspath(out_dir), *_flags({"provider": provider, **options})]
    exit_code, text = _native.split(args)
    done = _loaded(text)
    if exit_code == 0:
        return done
    if "invalid" in done:
        report = Report._from(done["invalid"])
        raise InvalidInputError(
            f"{report.file} has {len(report.errors)} errors; nothing was split (skip_invalid=True sets them aside)",
            report=report,
        )
    raise InvalidInputError(
        f"{len(done['oversize'])} lines cannot fit in any chunk; nothing was split",
        oversize=done["oversize"],
    )


def _paths(files: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    """One path or several, as strings (a single path is not a sequence of
    one-letter names)."""
    if isinstance(files, (str, os.PathLike)):
        return [os.fspath(files)]
    return [os.fspath(f) for f in files]


def _requests_args(requests: Union[PathLike, Sequence[PathLike]], results: Union[PathLike, Sequence[PathLike]]) -> List[str]:
    args: List[str] = []
    for f in _paths(requests):
        args += ["-i", f]
    return args + _paths(results)


def merge(
    requests: Union[PathLike, Sequence[PathLike]],
    results: Union[PathLike, Sequence[PathLike]],
    *,
    with_request: bool = False,
    text: bool = False,
) -> Iterator[Dict[str, Any]]:
    """Every request with its outcome, in input order, as ``merge`` writes
    them (``custom_id``, ``line``, ``status``, ``status_code``,
    ``response``, ``error``, ...), streamed: the files are read on a thread
    of their own while the records are taken, in bounded memory.

    ``results`` are the batches' output and error files, in any order.
    """
    lines = _native.MergeLines(_paths(requests), _paths(results), with_request, text)
    for block in lines:
        for line in block.splitlines():
            yield json.loads(line)


def merge_to(
    requests: Union[PathLike, Sequence[PathLike]],
    results: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    **options: Any,
) -> Dict[str, Any]:
    """``merge`` into ``output`` (written atomically); returns the summary
    of ``merge --format json``: ``requests``, ``written``, ``by_status``,
    ``by_code``, ``problems``.

    ``options`` are ``merge``'s: ``with_request``, ``text``, ``manifest``
    (a split's manifest instead of ``requests``), ``prefer``, ``unknown``.
    """
    args = [*_requests_args(requests, results), "-o", os.fspath(output), *_flags(options)]
    _, text_ = _native.merge_to(args)
    return _loaded(text_)


def retry(
    requests: Union[PathLike, Sequence[PathLike]],
    results: Union[PathLike, Sequence[PathLike]],
    output: PathLike,
    provider: str = "openai",
    **options: Any,
) -> Dict[str, Any]:
    """Write the requests that still need to run (expired, cancelled,
    missing, failed with a retryable status) to ``output``, ready to
    upload; returns the summary (``written``: how many).

    ``options`` are ``retry``'s: ``status`` and ``code`` (lists) to choose
    others.
    """
    args = [*_requests_args(requests, results), "-o", os.fspath(output), *_flags({"provider": provider, **options})]
    _, text_ = _native.retry(args)
    return _loaded(text_)
