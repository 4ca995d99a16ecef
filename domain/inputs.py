"""The one strict input layer: what text, numbers and JSON the service accepts, wherever they enter (JSON
bodies, form fields, query parameters, page tokens, manifests, safetensors headers).

A value that passes here can be stored in either database and served back as JSON: no lone UTF-16
surrogate (it cannot be encoded as UTF-8), no control character (NUL is refused by Postgres, CR/LF split
headers), no NaN/Infinity or number beyond 2^53 (not exact in JSON clients), no JSON nested deeper than
MAX_DEPTH. Free text (descriptions, reasons) may hold tab and line breaks; nothing else may. Errors name
the position and the code point, never echo the value (it may not be printable, or encodable, at all).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ValidationError, ValidatorFunctionWrapHandler, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

MAX_DEPTH = 16  # JSON nesting of config, architecture_kwargs, preprocessing
MAX_NUMBER = 2**53  # beyond this JSON numbers are not exact in most clients; no field needs more
MAX_DIGITS = 20  # of an integer literal, checked before int() converts it (10^4000 is never converted)

_SURROGATES = "\ud800-\udfff"
_LINE_BAD = re.compile(f"[\x00-\x1f\x7f-\x9f{_SURROGATES}]")  # C0, DEL, C1 controls and lone surrogates
_PROSE_BAD = re.compile(f"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f{_SURROGATES}]")  # the same less \t \n \r
_URL_BAD = re.compile(f"[\\s\x00-\x1f\x7f-\x9f{_SURROGATES}]")  # and no whitespace at all


def _why(found: re.Match[str]) -> str:
    char = found.group()
    kind = (
        "a NUL character"
        if char == "\x00"
        else "a lone UTF-16 surrogate"
        if "\ud800" <= char <= "\udfff"
        else "a control character"
        if char < "\x20" or "\x7f" <= char <= "\x9f"
        else "whitespace"
    )
    return f"contains {kind} (U+{ord(char):04X}) at position {found.start()}"


def _checker(pattern: re.Pattern[str]) -> Callable[[str], str]:
    def check(value: str) -> str:
        found = pattern.search(value)
        if found:
            raise ValueError(_why(found))
        return value

    return check


check_line = _checker(_LINE_BAD)  # names, ids, single-line text
check_prose = _checker(_PROSE_BAD)  # descriptions, reasons
check_url = _checker(_URL_BAD)


def text_problem(value: str) -> str | None:
    """Why `value` is not acceptable single-line text, or None."""
    found = _LINE_BAD.search(value)
    return _why(found) if found else None


def _check_lines(values: list[str]) -> list[str]:
    """Every item as `check_line`, in one scan (a list may hold a million ids)."""
    if _LINE_BAD.search("".join(values)):
        for index, value in enumerate(values):
            if problem := text_problem(value):
                raise ValueError(f"item {index} {problem}")
    return values


class JsonProblem(ValueError):
    """A value inside a JSON document is refused; `path` locates it (keys and list indexes)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        super().__init__(f"{where}: {message}" if where else message)
        self.path, self.message = path, message


NUMBER_RANGE = "must be a finite number within ±2^53"


def check_number(value: float, path: tuple[str | int, ...] = ()) -> None:
    if (isinstance(value, float) and not math.isfinite(value)) or abs(value) > MAX_NUMBER:
        raise JsonProblem(path, NUMBER_RANGE)


def check_json(
    value: Any,
    path: tuple[str | int, ...] = (),
    *,
    max_depth: int = MAX_DEPTH,
    text: Callable[[str], str | None] = text_problem,
) -> Any:
    """A parsed JSON value holding only acceptable text (keys as single lines; `text` says why a string value
    is not acceptable) and finite bounded numbers, nested at most `max_depth` deep."""
    if len(path) > max_depth:
        raise JsonProblem(path, f"nested more than {max_depth} deep")
    if isinstance(value, str):
        if problem := text(value):
            raise JsonProblem(path, problem)
    elif isinstance(value, bool) or value is None:
        pass
    elif isinstance(value, int | float):
        check_number(value, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_json(item, (*path, index), max_depth=max_depth, text=text)
    elif isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or (problem := text_problem(key)):
                raise JsonProblem(path, f"a key {problem or 'is not text'}")  # the path stops before the bad key
            check_json(item, (*path, key), max_depth=max_depth, text=text)
    else:
        raise JsonProblem(path, "not a JSON value")
    return value


def _json_object(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """check_json as a pydantic validator whose error points at the refused value (loc config.lr, say)."""
    value = handler(value)
    try:
        return check_json(value)
    except JsonProblem as error:
        raise ValidationError.from_exception_data(
            "JSON",
            [InitErrorDetails(type=PydanticCustomError("json_value", error.message), loc=error.path, input=None)],
        ) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits is out of range")
    return int(text)


def _finite_float(text: str) -> float:
    number = float(text)
    check_number(number)
    return number


def _duplicate(key: str) -> ValueError:
    return ValueError(f"the key {key!r} occurs twice in one object")


def unique_keys(
    pairs: list[tuple[str, Any]], on_duplicate: Callable[[str], ValueError] | None = None
) -> dict[str, Any]:
    """An object whose keys are all distinct: with a duplicate, which value counts depends on the reader (a
    forged first copy of a signed key must not pass unseen). `on_duplicate` makes the error to raise."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise (on_duplicate or _duplicate)(key)
        result[key] = value
    return result


def parse_json(
    text: str | bytes, *, max_depth: int = MAX_DEPTH, text_check: Callable[[str], str | None] = text_problem
) -> Any:
    """Strict json.loads: UTF-8, no duplicate key, no NaN/Infinity, no huge numbers, nesting at most
    `max_depth`, string values that `text_check` accepts. Raises ValueError (with a message for the user) for
    anything else, never RecursionError or a digit-limit error."""
    try:
        value = json.loads(
            text,
            object_pairs_hook=unique_keys,
            parse_constant=_refuse_constant,
            parse_int=_bounded_int,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise ValueError(f"nested more than {max_depth} deep") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"not UTF-8 ({error.reason} at byte {error.start})") from None
    return check_json(value, max_depth=max_depth, text=text_check)


def _digits_only(value: Any) -> Any:
    """A form or query integer is written as digits: "10.0", "1e1" or " 10" is a 422, not 10."""
    if isinstance(value, str) and not (value.isascii() and value.lstrip("-").isdigit() and len(value) <= MAX_DIGITS):
        raise ValueError("must be an integer written in digits")
    return value


_LONE_SURROGATE = re.compile(f"[{_SURROGATES}]")


def servable(value: Any) -> Any:
    """`value` with any lone surrogate replaced by U+FFFD, so that a row stored before these checks can still
    be served as UTF-8 JSON."""
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {servable(k): servable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [servable(v) for v in value]
    return value


Line = Annotated[str, AfterValidator(check_line)]
Lines = Annotated[list[str], AfterValidator(_check_lines)]
Prose = Annotated[str, AfterValidator(check_prose)]
Url = Annotated[str, AfterValidator(check_url)]
JsonObject = Annotated[dict[str, Any], WrapValidator(_json_object)]
DigitsInt = Annotated[int, BeforeValidator(_digits_only)]
