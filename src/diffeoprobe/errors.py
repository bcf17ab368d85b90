"""The one exception type for user errors."""

__all__ = [
    "DiffeoProbeError",
    "DiffeoProbeWarning",
    "first_line",
    "one_line",
]


class DiffeoProbeError(ValueError):
    """A user error: bad input, a missing file, an unknown name.

    The message always names the offending parameter and what is allowed, so the CLI can print it
    without a traceback (exit code 2).
    """


class DiffeoProbeWarning(UserWarning):
    """Something skipped that the user should know of (a corrupt run left out of a query).

    One line, naming what was skipped and why; the CLI prints it as ``warning: ...``.
    """


def first_line(exc: BaseException) -> str:
    r"""The first line of an exception's message (its type's name when it has none): for
    messages whose later lines carry advice that does not apply (torch's ``weights_only`` text).

    >>> first_line(ValueError("bad file\nretry with weights_only=False"))
    'bad file'
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """An exception's message on one line, for a DiffeoProbeError that quotes it.

    A YAML error (PyYAML's ``MarkedYAMLError``, which spans 4-8 lines with code excerpts and
    carets) becomes its problem and position: ``expected ',' or ']' (line 3, column 5)``; any
    other message has its lines joined.

    >>> one_line(ValueError("first  second "))
    'first second'
    """
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if isinstance(problem, str):
        context = getattr(exc, "context", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        return f"{context + ': ' if isinstance(context, str) else ''}{problem}{where}"
    return " ".join(str(exc).split()) or type(exc).__name__
