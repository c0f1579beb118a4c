"""Value types of the hparam schema: each checks one value, normalizes it and names what it
expects; the numbers among them carry their range.

A type's `check` raises `Invalid` with the end of the message (`has the wrong type: expected
...`, `must be in (0, 1]`, `is not supported: ...`); the validation puts the key and the value
in front of it and raises `ConfigError`, the one error type of the config package.
"""

from __future__ import annotations

import math
import types
from dataclasses import dataclass
from typing import Any, Mapping

from efficientdet_tf.config.parsing import list_items
from efficientdet_tf.errors import ConfigError
from efficientdet_tf.label_map import check_label_map


class Invalid(Exception):
    """A value that its type refuses; the message is the end of the error's sentence."""


class ValueType:
    """Checks and normalizes one value; `describe` names the expected type in error messages.

    Subclasses implement `convert`, which may raise TypeError, ValueError or OverflowError for a
    value of the wrong kind: `check` reports those with the description of the outermost type,
    so that a wrapped type (`Nullable(Float())`) reads as a whole ("float or null"). A type whose
    parts need their own names (`fpn_config.nodes[2]`) raises `ConfigError` itself.
    """

    def check(self, value: Any) -> Any:
        try:
            return self.convert(value)
        except ConfigError:  # a ValueError too, raised with its own message by a nested type
            raise
        except (TypeError, ValueError, OverflowError):
            raise Invalid(f"has the wrong type: expected {self.describe()}.") from None

    def convert(self, value: Any) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Range:
    """An interval of numbers; a bound left None is open-ended."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, number) -> bool:
        above = self.low is None or (number > self.low if self.low_open else number >= self.low)
        below = self.high is None or (number < self.high if self.high_open else number <= self.high)
        return above and below

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return (f"in {'(' if self.low_open else '['}{self.low}, {self.high}"
                    f"{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{'above' if self.low_open else 'at least'} {self.low}"
        if self.high is not None:
            return f"{'below' if self.high_open else 'at most'} {self.high}"
        return ""


class Number(ValueType):
    """An int or a float within `range`; a float must be finite too (an int given for a float
    becomes one; PyYAML reads "1e-4", without a dot, as a string)."""

    def __init__(self, kind: type, *, ge=None, gt=None, le=None, lt=None):
        self.kind = kind
        self.range = Range(low=gt if gt is not None else ge, high=lt if lt is not None else le,
                           low_open=gt is not None, high_open=lt is not None)

    def convert(self, value):
        if self.kind is int:
            if not is_int(value):
                raise TypeError
        elif isinstance(value, str) or is_number(value):
            value = _to_float(value)
        else:
            raise TypeError
        if value not in self.range or (self.kind is float and not math.isfinite(value)):
            raise Invalid(f"must be {self.describe_range()}.")
        return value

    def describe(self):
        return self.kind.__name__

    def describe_range(self) -> str:
        bounds = self.range.describe()
        if self.kind is int:
            return bounds
        return f"a finite number {bounds}".rstrip()


def _to_float(value) -> float:
    """float(value); an int too large for a float is an infinite one."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def Int(**bounds) -> Number:  # noqa: N802 (a type, spelled like one in the schema)
    return Number(int, **bounds)


def Float(**bounds) -> Number:  # noqa: N802
    return Number(float, **bounds)


class Scalar(ValueType):
    """A bool or a str: exactly that Python type."""

    def __init__(self, kind: type):
        self.kind = kind

    def convert(self, value):
        if isinstance(value, bool) != (self.kind is bool) or not isinstance(value, self.kind):
            raise TypeError
        return value

    def describe(self):
        return self.kind.__name__


BOOL, STR = Scalar(bool), Scalar(str)


class Nullable(ValueType):
    def __init__(self, inner: ValueType):
        self.inner = inner

    def convert(self, value):
        return None if value is None else self.inner.convert(value)

    def describe(self):
        return f"{self.inner.describe()} or null"


class ZeroIsNull(Nullable):
    """`inner` or null, where 0 is null too: the official code reads these values with `or`, so
    its default 0 (nms_configs.score_thresh) means the method's default."""

    def convert(self, value):
        return None if is_number(value) and value == 0 else super().convert(value)

    def describe(self):
        return f"{super().describe()} (0: null)"


class NullMeans(ValueType):
    """`inner`, where null (the official default of some keys) stands for `value`."""

    def __init__(self, inner: ValueType, value: Any):
        self.inner, self.value = inner, value

    def convert(self, value):
        return self.inner.convert(self.value if value is None else value)

    def describe(self):
        return f"{self.inner.describe()} (null: {self.value!r})"


class OneOf(ValueType):
    """One of the names of `choices` (a dict of implementations or a tuple of names)."""

    def __init__(self, choices):
        self.choices = tuple(choices)

    def convert(self, value):
        if not isinstance(value, str) or value not in self.choices:
            raise ValueError
        return value

    def describe(self):
        return "one of " + ", ".join(repr(c) for c in self.choices)


class ListOf(ValueType):
    """A list; on the command line also "[a,b]" of words (`[object_detection,segmentation]`)
    and the official form "1.0*2.0*0.5" (`*` separates the items)."""

    def __init__(self, inner: ValueType, length: int | None = None, min_length: int = 1):
        self.inner, self.length, self.min_length = inner, length, min_length

    def convert(self, value):
        if isinstance(value, str):
            value = list_items(value)
        if not isinstance(value, (list, tuple)):
            raise TypeError
        if len(value) < self.min_length or self.length not in (None, len(value)):
            raise ValueError
        return [self.inner.convert(v) for v in value]

    def describe(self):
        size = f"{self.length} " if self.length is not None else ""
        return f"a list of {size}{self.inner.describe()} ([a,b] or a*b)"


class Rgb(ListOf):
    """Three numbers, one per channel; a single number (the official lite models' form) is
    the value of all three."""

    def __init__(self, inner: Number):
        super().__init__(inner, length=3)

    def convert(self, value):
        return super().convert([value] * 3 if is_number(value) else value)


class Heads(ListOf):
    """The hparam `heads`: a list of head names; a single name (`heads=segmentation`) is a list
    of one. Emptiness and repeats are checked with the other joint rules."""

    def __init__(self, names):
        super().__init__(OneOf(names), min_length=0)

    def convert(self, value):
        if isinstance(value, str):
            value = list_items(value)
        return super().convert([value] if isinstance(value, str) else value)


class ImageSize(ValueType):
    """An int, [height, width], or the official "WxH" string; stored as (height, width) of
    positive ints (the joint rules check it against min_level)."""

    def convert(self, value):
        if is_int(value):
            size = (value, value)
        elif isinstance(value, str) and "x" in value.lower():
            width, height = (int(v) for v in value.lower().split("x"))
            size = (height, width)
        elif isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_int, value)):
            size = tuple(value)
        else:
            raise TypeError
        if min(size) <= 0:
            raise Invalid("must be positive: each side at least 1 pixel.")
        return size

    def describe(self):
        return 'an int, [height, width] or "WxH"'


class LabelMap(ValueType):
    """A label map spec ('coco', a file path, see `efficientdet_tf.label_map`) or the {id: name}
    mapping itself (as a training run records the classes it found); the mapping is stored
    read-only."""

    def convert(self, value):
        if isinstance(value, str):
            return value
        if not isinstance(value, Mapping):
            raise TypeError
        try:
            return types.MappingProxyType(check_label_map(value, "hparam 'label_map'"))
        except ValueError as error:  # its message names the key, the value and the fix
            raise ConfigError(str(error)) from None

    def describe(self):
        return "a label map name or file, or a mapping {class id: name}"


class OfficialDefaultOnly(ValueType):
    """An official hparam that has no job here (or whose job a flag does): its official default
    is accepted, so that official config files load; any other value is refused with `why`,
    which names what to use instead."""

    def __init__(self, default: Any, why: str):
        self.default, self.why = default, why

    def convert(self, value):
        if type(value) is not type(self.default) or value != self.default:
            raise Invalid(f"is not supported: {self.why}")
        return value

    def describe(self):
        return f"only {self.default!r}"
