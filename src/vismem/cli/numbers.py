"""Number options and arguments: bad usage (exit 2) unless a finite number in range, said
in one wording ("'--k': 0 is not from 1 to 1,000", "'--seed': -1 is below 0")."""

from __future__ import annotations

import math
from typing import Any, Callable

import typer


def _bound(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"


def _number(low: float | None, high: float | None, kind: type = float,
            above: float | None = None) -> Callable[[Any], Any]:
    """Parses a number option (`kind` float or int): a finite number from `low` to `high`,
    or `above` an open lower bound.
    Typer's own range check passed inf above no bound, told NaN it "should be less than or
    equal to" the most, named one bound of two, and spoke pydantic's words ("Input should be
    greater than or equal to 1")."""
    def parse(text: Any) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise typer.BadParameter(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(value):
            raise typer.BadParameter(f"{value} is not a finite number")
        if low is not None and high is not None and not low <= value <= high:
            raise typer.BadParameter(f"{value} is not from {_bound(low)} to {_bound(high)}")
        if low is not None and value < low:
            raise typer.BadParameter(f"{value} is below {_bound(low)}")
        if high is not None and value > high:
            raise typer.BadParameter(f"{value} is above {_bound(high)}")
        if above is not None and not value > above:
            raise typer.BadParameter(f"{value} is not above {_bound(above)}")
        return value
    return parse


def _limits(low: float | None, high: float | None, above: float | None) -> str | None:
    """The range as --help says it, in the words of `_number`'s errors."""
    if above is not None:
        return f"above {_bound(above)}" + ("" if high is None else f", at most {_bound(high)}")
    if low is not None and high is not None:
        return f"{_bound(low)} to {_bound(high)}"
    if low is not None:
        return f"at least {_bound(low)}"
    return None if high is None else f"at most {_bound(high)}"


def _ranged(make: Callable[..., Any], default: Any, *decls: str, min: float | None, max: float | None,
            above: float | None, kind: type, help: str | None = None, show_default: bool | str = True,
            **given: Any) -> Any:
    """A number parameter whose --help ends with its default and range as its errors say them,
    `[default: 2.0; 0 to 1,000,000]`: given min and max, Typer showed `0.0<=x<=1000000.0`
    (its one rendering, with no hook to change it), so they are not given to it."""
    extra = []
    if isinstance(show_default, str) or (show_default and default not in (None, ...)):
        extra.append(f"default: {show_default if isinstance(show_default, str) else default}")
    if min is not None and above is not None:
        raise ValueError("give min or above, not both")
    limits = _limits(min, max, above)
    if limits:
        extra.append(limits)
    if extra:
        help = f"{help}  [{'; '.join(extra)}]" if help else f"[{'; '.join(extra)}]"
    return make(default, *decls, parser=_number(min, max, kind, above), help=help, show_default=False, **given)


def number_option(default: Any, *flags: str, min: float | None = None, max: float | None = None,
                  above: float | None = None, kind: type = float, **given: Any) -> Any:
    """A float (or `kind=int`) option that is bad usage (exit 2) unless a finite number
    within [min, max] (or `above` an open lower bound); --help says the range as the
    error does."""
    return _ranged(typer.Option, default, *flags, min=min, max=max, above=above, kind=kind, **given)


def number_argument(default: Any, *, min: float | None = None, max: float | None = None,
                    kind: type = int, **given: Any) -> Any:
    """`number_option`'s check for an argument (a whole number unless `kind=float`)."""
    return _ranged(typer.Argument, default, min=min, max=max, above=None, kind=kind, **given)
