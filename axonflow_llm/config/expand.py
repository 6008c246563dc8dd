"""Environment variables in configuration values: ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``$$``."""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..pipeline.errors import ConfigError

__all__ = ["MissingVariable", "expand_env", "has_reference"]

# ``$$`` | ``${NAME}`` | ``${NAME:-default}`` | ``${NAME-default}`` | a ``${`` that is none of these.
_REF = re.compile(
    r"\$(?:(?P<dollar>\$)"
    r"|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?-)(?P<default>[^}]*))?\}"
    r"|(?P<bad>\{[^}]*\}?))"
)


class MissingVariable(ConfigError):
    """A value names an environment variable that is unset and has no default.

    ``variable`` is its name; the message says where (file, line, path) and how to fix it.
    """

    def __init__(self, message: str, *, variable: str) -> None:
        super().__init__(message)
        self.variable = variable


def has_reference(text: str) -> bool:
    """Whether ``text`` has anything for :func:`expand_env` to do (a cheap test before the regex)."""
    return "$" in text


def expand_env(text: str, env: Mapping[str, str], *, where: str = "") -> str:
    """Replace every variable reference in ``text`` with its value from ``env``.

    - ``${VAR}``: the value of ``VAR``; unset is an error (:class:`MissingVariable`); empty stays empty.
    - ``${VAR:-default}``: ``default`` when ``VAR`` is unset *or empty*.
    - ``${VAR-default}``: ``default`` only when ``VAR`` is unset.
    - ``$$``: a literal ``$``. A ``$`` not followed by ``{`` or ``$`` is kept as it is.

    The result is not expanded again (a value or default holding ``${X}`` stays literal), and defaults
    cannot nest. ``where`` (``"file:line: path"``) prefixes error messages. No value is ever put in a
    message: only variable names.
    """
    if "$" not in text:
        return text

    def replace(match: re.Match[str]) -> str:
        if match.group("dollar") is not None:
            return "$"
        if match.group("bad") is not None:
            # The text itself is not shown: it may be a secret typed in by mistake.
            raise ConfigError(
                f"{where}: malformed variable reference (a '${{' not followed by NAME}}, NAME:-default}} "
                "or NAME-default}); write ${NAME}, ${NAME:-default} or ${NAME-default} (NAME: letters, "
                "digits and underscores, not starting with a digit), or $$ for a literal dollar sign"
            )
        name = match.group("name")
        op = match.group("op")
        if op is not None and "${" in match.group("default"):
            # ${A:-${B}} would end at the first '}' and leave a stray '}' behind: refuse it.
            raise ConfigError(
                f"{where}: the default of ${{{name}{op}...}} holds a '${{': defaults cannot nest; write the "
                "default as plain text"
            )
        value = env.get(name)
        if op == ":-":
            return value if value else match.group("default")
        if op == "-":
            return value if value is not None else match.group("default")
        if value is None:
            raise MissingVariable(
                f"{where}: environment variable {name} is not set; set it, or give a default with "
                f"${{{name}:-default}}",
                variable=name,
            )
        return value

    return _REF.sub(replace, text)

