"""HTTP trigger route templates (ASP.NET Core syntax, as the Functions host uses) matched against paths.

Supported: literal segments (case-insensitive), ``{param}``, optional ``{param?}``, defaults
``{param=value}``, catch-all ``{*rest}``, and constraints such as ``{id:int}``, ``{name:alpha}``,
``{key:guid}``, ``{n:min(1)}`` or ``{s:length(2,8)}``. Unknown constraints are accepted as-is (the
loose part): the local host should never refuse a request Azure would serve.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import unquote

_PARAM = re.compile(r"\{([^{}]+)\}")
_CONSTRAINT = re.compile(r"^(\w+)(?:\((.*)\))?$")


@dataclass(frozen=True)
class RouteParam:
    name: str
    group: str
    constraints: tuple[tuple[str, str | None], ...]
    optional: bool
    default: str | None
    catch_all: bool


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled route; ``match(path)`` gives the route params or ``None``."""

    template: str
    regex: re.Pattern[str]
    params: tuple[RouteParam, ...]
    precedence: tuple[int, ...]

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.match(path.strip("/"))
        if found is None:
            return None
        values: dict[str, str] = {}
        for param in self.params:
            raw = found.group(param.group)
            if raw is None or raw == "":
                if param.default is not None:
                    values[param.name] = param.default
                elif not param.optional:
                    return None
                continue
            value = unquote(raw)
            if not all(_satisfies(value, name, arg) for name, arg in param.constraints):
                return None
            values[param.name] = value
        return values


def _parse_param(body: str, index: int) -> RouteParam:
    catch_all = body.startswith("*")
    body = body.lstrip("*")
    default: str | None = None
    if "=" in body:
        body, default = body.split("=", 1)
    optional = body.endswith("?")
    body = body.rstrip("?")
    name, *constraint_texts = _split_constraints(body)
    constraints: list[tuple[str, str | None]] = []
    for text in constraint_texts:
        match = _CONSTRAINT.match(text.rstrip("?"))
        if match:
            constraints.append((match.group(1).lower(), match.group(2)))
        if text.endswith("?"):
            optional = True
    return RouteParam(
        name=name,
        group=f"p{index}",
        constraints=tuple(constraints),
        optional=optional or catch_all,
        default=default,
        catch_all=catch_all,
    )


def _split_constraints(body: str) -> list[str]:
    """Split ``name:c1(arg):c2`` on colons that are not inside a constraint's parentheses."""
    parts: list[str] = []
    depth = 0
    current = ""
    for char in body:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == ":" and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def compile_route(template: str) -> RouteTemplate:
    """Compile a route template; raises ``ValueError`` on a template the host would also refuse."""
    segments = [s for s in template.strip("/").split("/") if s != ""]
    params: list[RouteParam] = []
    pattern = ""
    precedence: list[int] = []
    for position, segment in enumerate(segments):
        separator = "/" if position else ""
        whole = _PARAM.fullmatch(segment)
        if whole:
            param = _parse_param(whole.group(1), len(params))
            params.append(param)
            body = ".*" if param.catch_all else "[^/]+"
            group = f"(?P<{param.group}>{body})"
            if param.optional or param.default is not None:
                pattern += f"(?:{separator}{group})?"
                precedence.append(4 if param.catch_all else 3)
            else:
                pattern += separator + group
                precedence.append(1 if param.constraints else 2)
            continue
        piece = ""
        last = 0
        for found in _PARAM.finditer(segment):
            piece += re.escape(segment[last : found.start()])
            param = _parse_param(found.group(1), len(params))
            params.append(param)
            piece += f"(?P<{param.group}>[^/]+?)"
            last = found.end()
        piece += re.escape(segment[last:])
        leftover = _PARAM.sub("", segment)
        if "{" in leftover or "}" in leftover:
            raise ValueError(f"route template '{template}' has an unbalanced brace in '{segment}'")
        pattern += separator + piece
        precedence.append(0 if last == 0 else 1)
    return RouteTemplate(
        template=template,
        regex=re.compile(f"^{pattern}/?$", re.IGNORECASE),
        params=tuple(params),
        precedence=tuple(precedence),
    )


_NUMBER = re.compile(r"^-?\d+$")


def _satisfies(value: str, constraint: str, arg: str | None) -> bool:
    """The usual ASP.NET Core route constraints; unknown ones pass."""
    try:
        if constraint in ("int", "long"):
            return bool(_NUMBER.match(value))
        if constraint == "alpha":
            return value.isascii() and value.isalpha()
        if constraint == "bool":
            return value.lower() in ("true", "false")
        if constraint == "guid":
            uuid.UUID(value)
            return True
        if constraint in ("double", "float", "decimal"):
            float(value)
            return True
        if arg is None:
            return True
        args = [a.strip() for a in arg.split(",")]
        if constraint == "minlength":
            return len(value) >= int(args[0])
        if constraint == "maxlength":
            return len(value) <= int(args[0])
        if constraint == "length":
            return (
                len(value) == int(args[0]) if len(args) == 1 else int(args[0]) <= len(value) <= int(args[1])
            )
        if constraint == "min":
            return int(value) >= int(args[0])
        if constraint == "max":
            return int(value) <= int(args[0])
        if constraint == "range":
            return int(args[0]) <= int(value) <= int(args[1])
        if constraint == "regex":
            return re.fullmatch(arg, value) is not None
    except ValueError:
        return False
    return True
