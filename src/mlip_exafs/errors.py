"""One exception type for problems the user can fix.

The CLI turns it into a single line on stderr and a non-zero exit, so every
message must say what is wrong *and* what to do about it.

A library message names a stage setting with :func:`setting` (``lower
{setting('kmin_inv_a')}``), never a CLI flag or a YAML key: the same stage runs
from the CLI, where the setting is a flag (``--kmin``), and from a study, where
it is a YAML key (``experiment.kmin_inv_a``). Each front end renders the marked
names in its own terms with :meth:`UserError.in_terms`; ``str(exc)`` reads them
as the quoted setting name (``'kmin_inv_a'``).
"""

from __future__ import annotations

import re
from typing import Mapping

def first_line(exc: BaseException, default: str | None = None) -> str:
    """An exception's message as one line (ASE's, larch's and torch's span many); ``default`` (else the exception's
    type name) when it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else (type(exc).__name__ if default is None else default)


_OPEN, _CLOSE = "\u27e6", "\u27e7"  # ⟦ ⟧: mathematical white square brackets, never in a message's own text
_MARKED = re.compile(f"{_OPEN}([^{_OPEN}{_CLOSE}]+){_CLOSE}")


def setting(name: str) -> str:
    """Mark the stage setting ``name`` (a field of the stage's settings) inside a :class:`UserError` message."""
    return f"{_OPEN}{name}{_CLOSE}"


def in_terms(message: str, names: Mapping[str, str]) -> str:
    """``message`` with every marked setting replaced by ``names[setting]``, or by the quoted setting name if absent."""
    return _MARKED.sub(lambda m: names.get(m[1]) or f"'{m[1]}'", message)


class UserError(Exception):
    """Bad input or environment; the message is shown to the user verbatim (marked settings in the reader's terms)."""

    @property
    def marked(self) -> str:
        """The message as raised, its settings still marked: what a step's child passes on to the study."""
        return str(self.args[0]) if self.args else ""

    def in_terms(self, names: Mapping[str, str]) -> str:
        """The message with each marked setting named as ``names`` says (a flag, a YAML key)."""
        return in_terms(self.marked, names)

    def __str__(self) -> str:
        return self.in_terms({})
