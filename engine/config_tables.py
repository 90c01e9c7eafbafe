"""Checks every TOML configuration shares (site.toml, the study file, [access], [budget], [dp], ...).

Each config module validates its own tables into frozen dataclasses; these helpers give them the
same two checks and the same messages: a table is a table with only known keys, and a key holds a
value of the expected type. ``where`` names the file and table, so a message always says which key
of which file is wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from engine.errors import ConfigError

#: Marks a key without a default: it must be present.
REQUIRED: Any = object()


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """The tables of the TOML file ``path``; a :class:`ConfigError` naming ``what`` (e.g. "study
    file") and the path if it is missing, unreadable or not valid TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{what} {str(path)!r} is not valid TOML: {exc}") from None


def checked_table(value: Any, where: str, known: set[str] | frozenset[str], *, kind: str = "key") -> dict[str, Any]:
    """``value`` as a table with no key outside ``known``; a :class:`ConfigError` naming ``where`` otherwise.

    ``kind`` is what the keys are called in the message ("key", or "section" for a file's top level).
    """
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown {kind}(s) {unknown}; expected {sorted(known)}")
    return value


def typed_value(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str,
                default: Any = REQUIRED) -> Any:
    """``table[key]`` checked to be of ``kind`` (a bool is never taken for an int or a number)."""
    if key not in table:
        if default is REQUIRED:
            raise ConfigError(f"{where}: missing key {key!r}")
        return default
    value = table[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(k.__name__ for k in kinds)
        raise ConfigError(f"{where}: {key} = {value!r} has the wrong type (expected {expected})")
    return value
