#!/usr/bin/env python3
"""Writes the sync client, ``src/hearth/_sync.py``, from the async one,
``src/hearth/_async.py``, with ``unasync`` (token replacement, as httpx and
httpcore do):

* ``async``/``await`` go; ``async def``/``async with``/``async for`` become
  their sync forms.
* Names: ``Async`` prefixes are dropped (``AsyncHearth`` -> ``Hearth``,
  ``httpx.AsyncClient`` -> ``httpx.Client``, ``AsyncIterator`` ->
  ``Iterator``, ``contextlib.AsyncExitStack`` -> ``ExitStack``...), and the
  names in ``REPLACEMENTS`` (``aclose`` -> ``close``, ``__aenter__`` ->
  ``__enter__``, ``_transport_async`` -> ``_transport_sync``...) are mapped.
* Docstrings and comments get the same name mapping, and lose ``await``
  and ``async`` before ``with``/``for``/``def``, so their examples read
  right in the sync client.
* A class alias made redundant by the mapping (``close = aclose`` became
  ``close = close``) is dropped.

What sync and async do differently beyond that lives in the hand-written
``_transport_async.py`` / ``_transport_sync.py`` (same names in both).

    sdk/python/.venv/bin/python sdk/python/scripts/unasync_gen.py          # rewrites _sync.py
    sdk/python/.venv/bin/python sdk/python/scripts/unasync_gen.py -o FILE  # writes FILE instead
    sdk/python/.venv/bin/python sdk/python/scripts/unasync_gen.py --check  # fails if stale

(with the venv that ``scripts/test-sdk`` makes, or any with the SDK's
``[test]`` extras, which bring ``unasync``).
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from pathlib import Path
from typing import Dict, Iterable, List

try:
    import tokenize_rt
    import unasync
except ImportError as e:  # pragma: no cover
    raise SystemExit("unasync_gen: %s; install the SDK's test extras: "
                     "pip install -e 'sdk/python[test]'" % e)

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "hearth"
SOURCE = PACKAGE / "_async.py"
TARGET = PACKAGE / "_sync.py"
COMMAND = "sdk/python/.venv/bin/python sdk/python/scripts/unasync_gen.py"

HEADER = """\
# Generated from _async.py by sdk/python/scripts/unasync_gen.py; do not edit.
# Edit _async.py (the one source of both clients) and regenerate this file:
#     {command}
""".format(command=COMMAND)

# Names that do not just lose an "Async" prefix (unasync's own table, with
# __aenter__ -> __enter__, AsyncIterator -> Iterator, StopAsyncIteration ->
# StopIteration, asynccontextmanager -> contextmanager..., comes first).
REPLACEMENTS: Dict[str, str] = {
    "_transport_async": "_transport_sync",
    "aclose": "close",
    "aread": "read",
    "aiter_bytes": "iter_bytes",
    "enter_async_context": "enter_context",
}

_ASYNC_PREFIX = re.compile(r"Async(?=[A-Z])")
# ``close = close`` (with the blank line before it, if any).
_SELF_ALIAS = re.compile(r"^(?:[ \t]*\n)?[ \t]+(\w+) = \1[ \t]*\n", re.M)
_TEXT_KEYWORDS = re.compile(r"\bawait\s+|\basync\s+(?=(?:with|for|def)\b)")


class SyncRule(unasync.Rule):
    """unasync's rule, with every ``Async``-prefixed name losing the prefix
    (unasync itself would make ``AsyncHearth`` ``SyncHearth``)."""

    def __init__(self) -> None:
        super().__init__("_async", "_sync", REPLACEMENTS)
        names = sorted(self.token_replacements, key=len, reverse=True)
        self._text_names = re.compile(r"\b(?:%s)\b" % "|".join(map(re.escape, names)))

    def _unasync_name(self, name: str) -> str:
        if name in self.token_replacements:
            return self.token_replacements[name]
        if _ASYNC_PREFIX.match(name):
            return name[len("Async"):]
        return name

    def unasync_text(self, text: str) -> str:
        """A docstring's or comment's text for the sync client."""
        text = _TEXT_KEYWORDS.sub("", text)
        text = self._text_names.sub(lambda m: self.token_replacements[m.group(0)], text)
        return re.sub(r"\bAsync(?=[A-Z]\w*)", "", text)

    def unasync_source(self, src: str) -> str:
        tokens = tokenize_rt.src_to_tokens(src)
        out: List[tokenize_rt.Token] = []
        for tok in self._unasync_tokens(tokens):
            if tok.name in ("STRING", "COMMENT"):
                tok = tok._replace(src=self.unasync_text(tok.src))
            out.append(tok)
        return tokenize_rt.tokens_to_src(out)


def _without_leading_comment(src: str) -> str:
    """The source without its leading comment block (the note for editors
    of ``_async.py``, which the generated header replaces)."""
    lines = src.splitlines(keepends=True)
    i = 0
    while i < len(lines) and lines[i].startswith("#"):
        i += 1
    return "".join(lines[i:])


def _leftovers(code: str) -> Iterable[str]:
    """Async constructs the mapping missed (a name needing a new rule)."""
    bad_name = re.compile(r"^(?:async|await|asyncio|__await__|Async[A-Z]\w*|Sync[A-Z]\w*|a(?:close|read|iter\w*|next))$")
    for tok in tokenize_rt.src_to_tokens(code):
        if tok.name == "NAME" and bad_name.match(tok.src):
            yield "line %s: %s" % (tok.line, tok.src)
        elif tok.name in ("STRING", "COMMENT") and re.search(r"\bAsync[A-Z]|\bawait\b", tok.src):
            yield "line %s: %s" % (tok.line, tok.src.strip()[:60])


def generate(src: str) -> str:
    """The text of ``_sync.py`` for the text of ``_async.py``."""
    code = SyncRule().unasync_source(_without_leading_comment(src))
    code = _SELF_ALIAS.sub("", code)
    bad = list(_leftovers(code))
    if bad:
        raise SystemExit(
            "unasync_gen: async left in the generated sync client (add a rule or a "
            "_transport_* helper):\n  " + "\n  ".join(bad)
        )
    return HEADER + code


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", help="write here instead of %s ('-': stdout)" % TARGET)
    ap.add_argument("--check", action="store_true", help="exit 1 if %s is not current" % TARGET.name)
    args = ap.parse_args(argv)
    text = generate(SOURCE.read_text(encoding="utf-8"))
    if args.check:
        current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
        if current == text:
            return 0
        sys.stdout.writelines(difflib.unified_diff(
            current.splitlines(keepends=True), text.splitlines(keepends=True),
            str(TARGET), "generated from " + SOURCE.name))
        print("\n%s is stale: it is generated from %s; regenerate it with:\n    %s"
              % (TARGET, SOURCE.name, COMMAND), file=sys.stderr)
        return 1
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output or TARGET).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
