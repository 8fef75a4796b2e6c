"""The one number check every gateway parser uses: ASCII digits only.

``str.isdigit()`` is true for "²" and "١" (Unicode digits), which ``int()``
then refuses or reads as a number no HTTP grammar allows: RFC 9110 and RFC
9112 define numbers as ``1*DIGIT`` and RFC 5234 Appendix B.1 defines DIGIT as
%x30-39, the ASCII digits alone. Pure.
"""

from __future__ import annotations


def is_digits(text: str) -> bool:
    """True for one or more ASCII digits (RFC 5234 B.1 ``1*DIGIT``), nothing else."""
    return text.isascii() and text.isdigit()


def parse_digits(text: str | None) -> int | None:
    """``text`` as a whole number when it is ``1*DIGIT``, else None."""
    if text is None or not is_digits(text):
        return None
    return int(text)
