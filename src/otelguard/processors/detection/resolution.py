"""Lists, exceptions and macro visibility resolved the way Falco's rule compiler does.

Falco works on condition *text* here, and rules depend on it (libs/Falco
``rule_loader_compiler.cpp``):

* **Lists** expand one level: an item naming a list that was defined before this list (its last
  definition or append) is replaced by that list's items as written; any other item stays as
  is. A condition then has every list name substituted, in list definition order, wherever the
  name stands between blanks, ``(``, ``)``, ``,``, ``=`` or the ends of the text, by the items
  joined with ``", "`` (an item with a blank is quoted). So ``proc.name in (shells)`` and
  ``proc.name = shell`` (a one-item list) both work, and a quoted ``"shells"`` is never a list.
* **Exceptions** become ``(<condition>) and not (<exception>) ...`` text built from the
  ``fields``/``comps``/``values`` as Falco builds it, before lists are substituted.
* **Macros** see only the macros defined before them (their last definition or append): a
  macro that uses a later one is an error ("Undefined macro"), as in Falco; rules see every
  macro.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence, TypeGuard

from otelguard.processors.detection.parser import LIST_OPS, WORD_OPS, SYMBOL_OPS

_BLANKS = " \t\n\r"
_DELIMS = _BLANKS + "(),="
OPERATORS = frozenset(WORD_OPS) | frozenset(SYMBOL_OPS)


class ExceptionError(ValueError):
    """An exception whose fields, comps and values do not fit together."""


def quote_item(item: str) -> str:
    """A list item or exception value as condition text: quoted when it holds a blank."""
    if " " in item and item[:1] not in ("'", '"'):
        return f'"{item}"'
    return item


def expand_lists(lists: Sequence[tuple[str, list[str], int, int]]
                 ) -> list[tuple[str, tuple[str, ...]]]:
    """(name, raw items, index, visibility) in definition order -> (name, items) with visible
    list names replaced by their items, one level deep."""
    by_name = {name: (items, index) for name, items, index, _vis in lists}
    out: list[tuple[str, tuple[str, ...]]] = []
    for name, items, _index, visibility in lists:
        expanded: list[str] = []
        for item in items:
            ref = by_name.get(item)
            if ref is not None and ref[1] < visibility:
                expanded.extend(ref[0])
            else:
                expanded.append(item)
        out.append((name, tuple(expanded)))
    return out


def substitute_list(text: str, name: str, items: Sequence[str]) -> tuple[str, bool]:
    """``text`` with every delimited occurrence of the list ``name`` replaced by its items."""
    used = False
    start = text.find(name)
    while start >= 0:
        end = start + len(name)
        if (start == 0 or text[start - 1] in _DELIMS) and \
                (end >= len(text) or text[end] in _DELIMS):
            while start > 0 and text[start - 1] in _BLANKS:
                start -= 1
            while end < len(text) and text[end] in _BLANKS:
                end += 1
            sub = ", ".join(quote_item(v) for v in items)
            if not sub:  # an empty list takes a neighbouring comma with it
                if start > 0 and text[start - 1] == ",":
                    start -= 1
                elif end < len(text) and text[end] == ",":
                    end += 1
            text = (text[:start] + " " if start > 0 else "") + sub + " " + text[end:]
            start += len(sub) + 1
            used = True
        start = text.find(name, start + 1)
    return text, used


def substitute_lists(text: str, lists: Sequence[tuple[str, tuple[str, ...]]]) -> str:
    """Every list of ``lists`` (in definition order) substituted into the condition ``text``."""
    for name, items in lists:
        if name in text:
            text, _used = substitute_list(text, name, items)
    return text


def _is_list(v: Any) -> TypeGuard[list[Any]]:
    return isinstance(v, list)


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def exception_condition(condition: str, exceptions: Sequence[Mapping[str, Any]]) -> str:
    """``condition`` with each exception appended as ``and not (...)`` text; raises
    :class:`ExceptionError` for a malformed exception (checked as Falco's collector does)."""
    out = f"({condition})"
    for ex in exceptions:
        name = ex.get("name")
        fields, comps, values = ex.get("fields"), ex.get("comps"), ex.get("values") or []
        if not _is_list(values):
            raise ExceptionError(f"exception {name!r}: values must be a list")
        icond = ""
        if not _is_list(fields):
            comp = "in" if comps is None else comps
            if _is_list(comp):
                raise ExceptionError(f"exception {name!r}: fields and comps must both be "
                                     "strings")
            if comp not in LIST_OPS:
                raise ExceptionError(f"exception {name!r}: when fields is a single value, comps "
                                     "must be one of (in, pmatch, intersects)")
            for val in values:
                if _is_list(val):
                    raise ExceptionError(f"exception {name!r}: expected values array to "
                                         "contain a list of strings")
                icond += f"({_text(fields)} {comp} (" if not icond else ", "
                icond += quote_item(_text(val))
            icond += "))" if icond else ""
        else:
            comp_list: Any = ["="] * len(fields) if comps is None else comps
            if not _is_list(comp_list) or len(comp_list) != len(fields):
                raise ExceptionError(f"exception {name!r}: fields and comps lists must have "
                                     "equal length")
            for c in comp_list:
                if _text(c) not in OPERATORS:
                    raise ExceptionError(f"exception {name!r}: {_text(c)!r} is not a supported "
                                         "comparison operator")
            icond = "("
            for tup in values:
                if not _is_list(tup) or len(tup) != len(fields):
                    raise ExceptionError(f"exception {name!r}: fields and values lists must "
                                         f"have equal length (got {tup!r})")
                icond += "" if icond == "(" else " or "
                icond += "("
                for k, (f, c, v) in enumerate(zip(fields, comp_list, tup)):
                    icond += "" if k == 0 else " and "
                    if _is_list(v):
                        istr = "(" + ", ".join(quote_item(_text(x)) for x in v) + ")"
                    else:
                        istr = _text(v)
                        if _text(c) in LIST_OPS:
                            istr = istr if istr.startswith("(") else f"({istr})"
                        else:
                            istr = quote_item(istr)
                    icond += f" {_text(f)} {_text(c)} {istr}"
                icond += ")"
            icond += ")"
            if icond == "()":
                icond = ""
        if icond:
            out += f" and not {icond}"
    return out
