"""How a setting is declared, parsed and reported; the declarations themselves are in settings.py.

A setting is a field of :class:`otel_crm._internal.settings.Settings` whose default is
:func:`setting`: the field's name and type annotation give the registry entry its name and kind
(``Literal`` choices included), the field's metadata the rest. :func:`registry_of` turns the
fields into :class:`Setting` entries, in declaration order. :func:`read_values` applies explicit
arguments and variables; it never reads the process environment itself (settings.py does).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import re
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["MASK", "UNSET", "Kind", "Setting", "SettingProblem", "SettingsError", "credential_key",
           "markdown_table", "mask_userinfo", "read_values", "registry_of", "setting", "show", "shown_raw"]

MASK = "****"
# A key or variable name that says it holds a credential (a header, a resource attribute...).
_CREDENTIAL = re.compile(r"pass|secret|token|auth|api[-_]?key|access[-_]?key|private|cookie|credential|"
                         r"session|signature|bearer|salt|headers", re.IGNORECASE)
# user:password@ (the password runs to the last "@" of the token, as URL parsers read it)
_USERINFO = re.compile(r"[^\s/?#@:'\"]*:[^\s/?#'\"]*@")
UNSET: Any = type("_Unset", (), {"__repr__": lambda self: "<unset>"})()
_METADATA_KEY = "otel_crm.setting"


class Kind(enum.Enum):
    BOOL = "bool"
    INT = "int"
    FLOAT = "float"
    STR = "str"
    ENUM = "enum"
    LIST = "list"  # comma-separated strings
    ENUM_LIST = "enum list"  # comma-separated, each from choices
    MAPPING = "mapping"  # key=value,key2=value2 (W3C baggage style, percent-decoded)
    JSON = "json"  # a JSON object (an explicit argument: a dict); its owner validates the content
    JSON_LIST = "json list"  # a JSON array of objects (explicit: a list of mappings)


@dataclass(frozen=True)
class Setting:
    name: str
    env: tuple[str, ...]
    kind: Kind
    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    secret: bool = False
    unit: str = ""  # shown with the allowed range: a wrong unit is the usual mistake
    # Defaults that differ under the `development` profile (deployment.environment.name).
    development_default: Any = UNSET
    # Item-level validation after parsing: (value, source) -> (kept value, problems); e.g. one bad
    # sampling rule is left out and reported, the other rules stay.
    check: Callable[[Any, str], tuple[Any, list[SettingProblem]]] | None = None
    # The distro writes this default to the standard variable (the last of `env`) for the
    # libraries that read that variable themselves (instrumentations, upstream tooling).
    distro_default: bool = False

    def allowed(self) -> str:
        if self.kind is Kind.BOOL:
            return "one of true/false/1/0/yes/no/on/off"
        if self.kind in (Kind.ENUM, Kind.ENUM_LIST):
            prefix = "one of " if self.kind is Kind.ENUM else "comma-separated values from "
            # Commas, not slashes: a choice may contain one (`http/protobuf`).
            return prefix + ", ".join(self.choices)
        if self.kind in (Kind.INT, Kind.FLOAT):
            what = "an integer" if self.kind is Kind.INT else "a number"
            unit = f" ({self.unit})" if self.unit else ""
            if self.minimum is not None and self.maximum is not None:
                return f"{what} from {_fmt(self.minimum)} to {_fmt(self.maximum)}{unit}"
            if self.minimum is not None:
                return f"{what} >= {_fmt(self.minimum)}"
            return what
        if self.kind is Kind.MAPPING:
            return "key=value pairs separated by commas"
        if self.kind is Kind.JSON:
            return "a JSON object"
        if self.kind is Kind.JSON_LIST:
            return "a JSON array of objects"
        return "a string"


def _fmt(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def setting(*env: str, default: Any, doc: str, minimum: float | None = None, maximum: float | None = None,
            secret: bool = False, unit: str = "", development_default: Any = UNSET,
            distro_default: bool = False,
            check: Callable[[Any, str], tuple[Any, list[SettingProblem]]] | None = None) -> Any:
    """A `Settings` field carrying its registry entry: the variables feeding it (first wins),
    default, doc and bounds. Name and kind come from the field itself (see `registry_of`)."""
    metadata = {_METADATA_KEY: {"env": env, "default": default, "doc": doc, "minimum": minimum,
                                "maximum": maximum, "secret": secret, "unit": unit,
                                "development_default": development_default,
                                "distro_default": distro_default, "check": check}}
    if isinstance(default, dict):  # a dataclass field may not share one mutable default
        return dataclasses.field(default_factory=lambda: dict(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _kind_of(hint: Any) -> tuple[Kind, tuple[str, ...]]:
    """The kind (and choices) of a setting, from its field's type annotation."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):  # `bool | None`: unset means "decide later"
        (hint,) = (arg for arg in args if arg is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return Kind.ENUM, tuple(args)
    if origin is tuple:
        item = args[0]
        if typing.get_origin(item) is typing.Literal:
            return Kind.ENUM_LIST, tuple(typing.get_args(item))
        return (Kind.LIST if item is str else Kind.JSON_LIST), ()
    if origin is Mapping:
        # Mapping[str, str] is the key=value form; Mapping[str, Any] a JSON object.
        return (Kind.JSON if args[1] is Any else Kind.MAPPING), ()
    simple = {bool: Kind.BOOL, int: Kind.INT, float: Kind.FLOAT, str: Kind.STR}
    if hint in simple:
        return simple[hint], ()
    raise TypeError(f"no setting kind for the type {hint!r}")


def registry_of(cls: type) -> tuple[Setting, ...]:
    """The registry entries of `cls`'s fields declared with :func:`setting`, in field order."""
    hints = typing.get_type_hints(cls)
    entries: list[Setting] = []
    for field in dataclasses.fields(cls):
        declared = field.metadata.get(_METADATA_KEY)
        if declared is None:
            continue
        kind, choices = _kind_of(hints[field.name])
        entries.append(Setting(name=field.name, kind=kind, choices=choices, **declared))
    return tuple(entries)


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True)
class SettingProblem:
    variable: str
    value: str
    allowed: str
    default: Any
    outcome: str = ""  # what happens instead (default: "using the default ...")

    def message(self, *, strict: bool = False) -> str:
        text = f"otel_crm: invalid {self.variable}={self.value!r}: expected {self.allowed}"
        if strict:
            return text
        if self.outcome:
            return f"{text}; {self.outcome}"
        if self.default in (None, "", (), {}):  # no value of ours: upstream's own default applies
            return f"{text}; using the default (unset)"
        return f"{text}; using the default {show(self.default)}"


def show(value: Any) -> str:
    """A default as the variable would spell it (lists and mappings comma-separated)."""
    if isinstance(value, tuple):
        return repr(",".join(value))
    if isinstance(value, dict):
        return repr(",".join(f"{k}={v}" for k, v in value.items()))
    return repr(value)


class SettingsError(ValueError):
    """Raised under OTEL_CRM_STRICT=true (or strict=True) for invalid settings."""

    def __init__(self, problems: list[SettingProblem]):
        self.problems = problems
        super().__init__("; ".join(p.message(strict=True) for p in problems))


class _Invalid(Exception):
    pass


def credential_key(name: str) -> bool:
    """Whether a key or variable name looks like it holds a credential."""
    return _CREDENTIAL.search(name) is not None


def mask_userinfo(text: str) -> str:
    """`text` with every ``user:password@`` replaced by ``****@``."""
    return _USERINFO.sub(MASK + "@", text) if "@" in text else text


def shown_raw(entry: Setting, raw: str, variable: str = "") -> str:
    """`raw`, the value of `entry` that failed to parse, as a warning may show it. Nothing of a
    secret or credential-looking variable (malformed, so no telling which part is the secret:
    ``x-team: SECRET`` has no ``=``); of a mapping, the keys, the values of keys that do not look
    like credentials, and no piece that is not ``key=value``."""
    if entry.secret or credential_key(variable) or any(credential_key(name) for name in entry.env):
        return MASK
    if entry.kind is not Kind.MAPPING:
        return mask_userinfo(raw)
    pieces = []
    for pair in raw.split(","):
        key, sep, _ = pair.partition("=")
        if not sep:
            pieces.append(MASK if pair.strip() else pair)
        elif credential_key(key):
            pieces.append(f"{key}={MASK}")
        else:
            pieces.append(pair)
    return ",".join(pieces)


def _parse(setting: Setting, raw: str) -> Any:
    text = raw.strip()
    kind = setting.kind
    if kind is Kind.BOOL:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise _Invalid
    if kind in (Kind.INT, Kind.FLOAT):
        try:
            number: float = int(text) if kind is Kind.INT else float(text)
        except ValueError:
            raise _Invalid from None
        if math.isnan(number) or math.isinf(number):
            raise _Invalid
        if setting.minimum is not None and number < setting.minimum:
            raise _Invalid
        if setting.maximum is not None and number > setting.maximum:
            raise _Invalid
        return number
    if kind is Kind.ENUM:
        low = text.lower()
        if low not in setting.choices:
            raise _Invalid
        return low
    if kind is Kind.LIST:
        return _parse_list(text)
    if kind is Kind.ENUM_LIST:
        items = tuple(item.lower() for item in _parse_list(text))
        if not items or any(item not in setting.choices for item in items):
            raise _Invalid
        return items
    if kind is Kind.MAPPING:
        return _parse_mapping(text)
    if kind is Kind.JSON_LIST:
        try:
            items = json.loads(text)
        except ValueError:
            raise _Invalid from None
        if not isinstance(items, list):
            raise _Invalid
        return tuple(items)
    if kind is Kind.JSON:
        try:
            document = json.loads(text)
        except ValueError:
            raise _Invalid from None
        if not isinstance(document, dict):
            raise _Invalid
        return document
    return text


def _parse_list(text: str) -> tuple[str, ...]:
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            raise _Invalid from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise _Invalid
        return tuple(value)
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _parse_mapping(text: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for pair in text.split(","):
        if not pair.strip():
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise _Invalid
        result[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return result


def markdown_table(registry: tuple[Setting, ...]) -> str:
    """The settings table of docs/configuration.md: one row per registry entry."""
    lines = ["| Setting | Variables (first wins) | Type / allowed | Default | What it does |",
             "|---|---|---|---|---|"]
    for s in registry:
        default = show(s.default) if s.default not in (None, "", (), {}) else "—"
        if s.development_default is not UNSET:
            default += f" (development: {show(s.development_default)})"
        variables = ", ".join(f"`{v}`" for v in s.env)
        lines.append(f"| `{s.name}` | {variables} | {s.allowed()} | {default} | {s.doc} |")
    return "\n".join(lines) + "\n"


def _check_explicit(setting: Setting, value: Any) -> Any:
    """Validate an explicit keyword argument with the same rules as its variable."""
    if isinstance(value, str) and setting.kind is not Kind.STR:
        return _parse(setting, value)
    kind = setting.kind
    if kind is Kind.BOOL:
        if not isinstance(value, bool) and not (setting.default is None and value is None):
            raise _Invalid
        return value
    if kind in (Kind.INT, Kind.FLOAT):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid
        if kind is Kind.INT and not isinstance(value, int):
            raise _Invalid
        return _parse(setting, str(value))
    if kind in (Kind.LIST, Kind.ENUM_LIST):
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        return _parse(setting, ",".join(str(v) for v in value)) if value else ()
    if kind is Kind.MAPPING:
        if not isinstance(value, Mapping):
            raise _Invalid
        return {str(k): str(v) for k, v in value.items()}
    if kind is Kind.JSON:
        if not isinstance(value, Mapping):
            raise _Invalid
        return dict(value)
    if kind is Kind.JSON_LIST:
        if not isinstance(value, (list, tuple)):
            raise _Invalid
        return tuple(value)
    if not isinstance(value, str):
        raise _Invalid
    return value


def read_values(registry: tuple[Setting, ...], env: Mapping[str, str], explicit: Mapping[str, Any]
                ) -> tuple[dict[str, Any], set[str], list[SettingProblem]]:
    """Values from explicit arguments (first) and variables (in each setting's order).

    Returns the values found, the names set that way, and the problems (a bad argument falls
    back to the variables, a bad variable to the default). Defaults are not filled in here."""
    problems: list[SettingProblem] = []
    values: dict[str, Any] = {}
    chosen: set[str] = set()
    for entry in registry:
        if entry.name in explicit and explicit[entry.name] is not None:
            try:
                values[entry.name] = _check_explicit(entry, explicit[entry.name])
                chosen.add(entry.name)
                _check_items(entry, values, f"argument {entry.name}", problems)
                continue
            except _Invalid:
                problems.append(SettingProblem(f"argument {entry.name}", shown_raw(entry, str(explicit[entry.name])),
                                               entry.allowed(), entry.default))
        for variable in entry.env:
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[entry.name] = _parse(entry, raw)
                chosen.add(entry.name)
                _check_items(entry, values, variable, problems)
            except _Invalid:
                problems.append(SettingProblem(variable, shown_raw(entry, raw, variable), entry.allowed(),
                                               entry.default))
            break
    return values, chosen, problems


def _check_items(entry: Setting, values: dict[str, Any], source: str, problems: list[SettingProblem]) -> None:
    if entry.check is not None:
        value = values[entry.name]
        try:
            values[entry.name], found = entry.check(value, source)
        except Exception:  # a check must never stop the host app: the value is refused instead
            values[entry.name], found = entry.default, [SettingProblem(source, str(value), entry.allowed(),
                                                                       entry.default)]
        # Checks report values as given: a secret setting's is masked whole, any other's user info.
        problems.extend(dataclasses.replace(p, value=MASK if entry.secret else mask_userinfo(p.value))
                        for p in found)
