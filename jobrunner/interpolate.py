"""``${VAR}`` expansion in the string values of a parsed TOML document.

``${VAR}`` and ``${VAR:-default}`` are expanded in every string (in arrays and tables too);
as in the shell, the default is used when ``VAR`` is unset or empty. ``$${`` stands for a
literal ``${``. Nesting and a default containing ``}`` are not supported. A string that cannot
be expanded is reported and replaced by :data:`~jobrunner.settings.UNRESOLVED`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jobrunner.settings import UNRESOLVED, Issues, join_key

__all__ = ["interpolate"]

_VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-((?:[^}$]|\$(?!\{))*))?\}|\$\{")


def _expand(text: str, key: str, environ: Mapping[str, str], issues: Issues) -> object:
    unset: list[str] = []
    malformed: list[str] = []

    def replace(match: re.Match[str]) -> str:
        whole, name, has_default, default = match[0], match[1], match[2], match[3]
        if whole == "$${":
            return "${"
        if name is None:
            malformed.append(whole)
            return whole
        value = environ.get(name)
        if has_default is not None and not value:
            return str(default)
        if value is None:
            unset.append(name)
            return ""
        return value

    result = _VARIABLE.sub(replace, text)
    if malformed:
        issues.add(key, "malformed '${': allowed ${VAR}, ${VAR:-default}, or $${ for '${'")
    elif unset:
        names = ", ".join(dict.fromkeys(unset))
        issues.add(
            key,
            f"environment variable not set: {names}; set it or give a default: "
            f"${{{unset[0]}:-default}}",
        )
    return UNRESOLVED if malformed or unset else result


def interpolate(value: object, key: str, environ: Mapping[str, str], issues: Issues) -> Any:
    """Expand ``${VAR}`` in every string inside ``value`` (recursively)."""
    if isinstance(value, str):
        return _expand(value, key, environ, issues)
    if isinstance(value, dict):
        return {k: interpolate(v, join_key(key, k), environ, issues) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{key}[{i}]", environ, issues) for i, v in enumerate(value)]
    return value
