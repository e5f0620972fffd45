"""Validation errors of specs and settings as short lines that name the field.

pydantic's own rendering quotes the whole input of each error: for a value
built from a YAML bomb or pasted by mistake that is megabytes. Here a value
is quoted clipped (:func:`loader.errors.excerpt`), or not at all where it
may be a secret, and field paths made of input keys are clipped too.
"""

from __future__ import annotations

from pydantic import ValidationError

from loader.errors import clip, excerpt

__all__ = ["validation_problems"]


def validation_problems(exc: ValidationError, *, show_input: bool) -> list[str]:
    """One ``field.path: what is wrong [(got …)]`` line per error; the input only if ``show_input``."""
    problems = []
    for err in exc.errors():
        where = clip(".".join(str(p) for p in err["loc"]), 200) or "(top level)"
        message = clip(err["msg"].removeprefix("Value error, "), 1000)
        got = err.get("input")
        # Our own validators (value_error) quote the value themselves; a dict is a whole section.
        shown = show_input and not isinstance(got, dict) and err["type"] not in {"missing", "value_error"}
        problems.append(f"{where}: {message}" + (f" (got {excerpt(got)})" if shown else ""))
    return problems
