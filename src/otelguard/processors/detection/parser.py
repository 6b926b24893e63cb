"""Falco's condition grammar, parsed into a small AST (no field knowledge here).

Grammar (precedence low to high)::

    expr   := and ('or' and)*
    and    := not ('and' not)*
    not    := 'not' not | atom
    atom   := '(' expr ')' | field UNARY | field BINARY value | macro-name
    field  := transformer '(' field ')' | 'join(' quoted ',' (field | '(' part (',' part)* ')') ')'
              | name ['[' arg ']']
    part   := field | quoted | number
    value  := quoted | bare | 'val(' name ['[' arg ']'] ')' | field-with-transformer
              | '(' item (',' item)* ')'

As in libs' parser, the ordering operators (``< <= > >=``) take a number, ``val()`` or a
transformed field, and the list operators take a list, ``val()``/a transformed field or a bare
identifier. Lists are substituted into the condition text before parsing (see
:mod:`~otelguard.processors.detection.resolution`), as Falco does. Parsing is done
once per rule at load time, so it favours clear errors (with the character offset) over speed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

UNARY_OPS = frozenset({"exists"})
LIST_OPS = frozenset({"in", "intersects", "pmatch"})
WORD_OPS = frozenset({
    "contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith", "glob",
    "iglob", "regex", "in", "intersects", "pmatch", "exists",
})
SYMBOL_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
TRANSFORMERS = frozenset({"tolower", "toupper", "b64", "basename", "len", "join"})
_KEYWORDS = frozenset({"and", "or", "not"})
_IDENTIFIER = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
# libs' number token: hex, or decimal with optional fraction and exponent
_NUMBER = re.compile(r"0[xX][0-9a-zA-Z]+|[+\-]?[0-9]+\.?[0-9]*(?:[eE][+\-][0-9]+)?")
_BARE_STOP = set(" \t\r\n\b(),\"'=")
_LIST_ITEM_STOP = _BARE_STOP


class ConditionSyntaxError(ValueError):
    """A condition that does not parse; ``offset`` is the character position in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.reason = message
        self.offset = offset


@dataclass(frozen=True)
class Literal:
    text: str
    quoted: bool


@dataclass(frozen=True)
class Join:
    """``join(sep, (a, b, ...))``: the parts' values (fields, transformed fields or literals)
    joined by ``sep``; ``join(sep, field)`` joins a list-valued field's items."""

    sep: str
    parts: tuple[Union["FieldRef", Literal], ...]
    listed: bool  # written as a list '(...)'

    def __str__(self) -> str:
        inner = ", ".join(repr(p.text) if isinstance(p, Literal) else str(p) for p in self.parts)
        return f"join({self.sep!r}, {'(' + inner + ')' if self.listed else inner})"


@dataclass(frozen=True)
class FieldRef:
    name: str  # "join" when ``join`` is set
    arg: Optional[str]
    transformers: tuple[str, ...]  # innermost first
    join: Optional[Join] = None

    def __str__(self) -> str:
        text = str(self.join) if self.join is not None else \
            self.name + (f"[{self.arg}]" if self.arg is not None else "")
        for t in self.transformers:
            text = f"{t}({text})"
        return text


@dataclass(frozen=True)
class ListValue:
    items: tuple[Union[Literal, "ListValue"], ...]


@dataclass(frozen=True)
class FieldValue:
    """``val(other.field)`` or a transformed field (``tolower(other.field)``) on the right-hand
    side: compare against another field of the same event."""

    field: FieldRef


Value = Union[Literal, ListValue, FieldValue]


@dataclass(frozen=True)
class Check:
    field: FieldRef
    op: str
    value: Optional[Value]
    offset: int


@dataclass(frozen=True)
class MacroRef:
    name: str
    offset: int


@dataclass(frozen=True)
class Not:
    child: "Node"


@dataclass(frozen=True)
class And:
    children: tuple["Node", ...]


@dataclass(frozen=True)
class Or:
    children: tuple["Node", ...]


Node = Union[Check, MacroRef, Not, And, Or]


def _is_name_start(c: str) -> bool:
    return c.isalpha() or c == "_"


def _is_name_char(c: str) -> bool:
    return c.isalnum() or c in "_.-"


class _Parser:
    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.n = len(text)

    # -- lexing helpers -------------------------------------------------------------------
    def ws(self) -> None:
        while self.i < self.n and self.s[self.i] in " \t\r\n":
            self.i += 1

    def peek_word(self) -> str:
        j = self.i
        while j < self.n and (self.s[j].isalnum() or self.s[j] == "_"):
            j += 1
        return self.s[self.i:j]

    def keyword(self, word: str) -> bool:
        """Consume ``word`` if it stands alone here (not a prefix of a longer name)."""
        self.ws()
        if self.s.startswith(word, self.i):
            end = self.i + len(word)
            if end >= self.n or not _is_name_char(self.s[end]):
                self.i = end
                return True
        return False

    def expect(self, ch: str) -> None:
        self.ws()
        if self.i >= self.n or self.s[self.i] != ch:
            got = "end of condition" if self.i >= self.n else repr(self.s[self.i])
            raise ConditionSyntaxError(f"expected {ch!r}, got {got}", self.i)
        self.i += 1

    # -- grammar ---------------------------------------------------------------------------
    def parse(self) -> Node:
        self.ws()
        if self.i >= self.n:
            raise ConditionSyntaxError("empty condition", 0)
        node = self.expr()
        self.ws()
        if self.i < self.n:
            raise ConditionSyntaxError(f"unexpected text {self.s[self.i:self.i + 20]!r}", self.i)
        return node

    def expr(self) -> Node:
        children = [self.and_()]
        while self.keyword("or"):
            children.append(self.and_())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_(self) -> Node:
        children = [self.not_()]
        while self.keyword("and"):
            children.append(self.not_())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_(self) -> Node:
        if self.keyword("not"):
            return Not(self.not_())
        return self.atom()

    def atom(self) -> Node:
        self.ws()
        if self.i >= self.n:
            raise ConditionSyntaxError("unexpected end of condition", self.i)
        if self.s[self.i] == "(":
            self.i += 1
            node = self.expr()
            self.expect(")")
            return node
        start = self.i
        if not _is_name_start(self.s[self.i]):
            raise ConditionSyntaxError(f"expected a field or macro, got {self.s[self.i]!r}", self.i)
        field = self.field()
        op = self.operator()
        if op is None:
            if field.arg is not None or field.transformers or field.join is not None \
                    or field.name in _KEYWORDS:
                raise ConditionSyntaxError(f"{field} needs an operator", self.i)
            return MacroRef(field.name, start)
        if op in UNARY_OPS:
            return Check(field, op, None, start)
        return Check(field, op, self.value(op), start)

    def field(self) -> FieldRef:
        start = self.i
        name = self.name()
        if name in TRANSFORMERS and self.i < self.n and self.s[self.i] == "(":
            self.i += 1
            self.ws()
            if name == "join":
                return FieldRef("join", None, (), self.join_args())
            inner = self.field()
            self.expect(")")
            return FieldRef(inner.name, inner.arg, inner.transformers + (name,), inner.join)
        arg: Optional[str] = None
        if self.i < self.n and self.s[self.i] == "[" and self.i == start + len(name):
            depth, j = 0, self.i
            while j < self.n:
                if self.s[j] == "[":
                    depth += 1
                elif self.s[j] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= self.n:
                raise ConditionSyntaxError("unterminated field argument '['", self.i)
            arg = self.s[self.i + 1:j]
            self.i = j + 1
        return FieldRef(name, arg, ())

    def join_args(self) -> Join:
        """After ``join(``: the quoted separator, then a field or a list of parts, then ')'."""
        if self.i >= self.n or self.s[self.i] not in "\"'":
            raise ConditionSyntaxError("join() needs a quoted separator first", self.i)
        sep = self.quoted()
        self.expect(",")
        self.ws()
        if self.i < self.n and self.s[self.i] == "(":
            self.i += 1
            parts: list[Union[FieldRef, Literal]] = []
            while True:
                self.ws()
                if self.i < self.n and self.s[self.i] in "\"'":
                    parts.append(Literal(self.quoted(), True))
                elif self.i < self.n and (self.s[self.i].isdigit() or self.s[self.i] in "+-"):
                    parts.append(Literal(self.bare(_BARE_STOP, "join"), True))
                else:
                    parts.append(self.operand("join"))
                self.ws()
                if self.i < self.n and self.s[self.i] == ",":
                    self.i += 1
                    continue
                self.expect(")")
                break
            self.expect(")")
            return Join(sep, tuple(parts), True)
        part = self.operand("join")
        self.expect(")")
        return Join(sep, (part,), False)

    def operand(self, what: str) -> FieldRef:
        """A field or transformed field where one is required."""
        self.ws()
        if self.i >= self.n or not _is_name_start(self.s[self.i]):
            raise ConditionSyntaxError(f"{what} needs a field", self.i)
        return self.field()

    def transformed(self) -> Optional[FieldValue]:
        """``val(field)`` or ``transformer(...)`` at the cursor, else None (nothing consumed)."""
        if self.s.startswith("val(", self.i):
            self.i += 4
            self.ws()
            ref = self.operand("val()")
            if ref.transformers or ref.join is not None:
                raise ConditionSyntaxError("val() takes a field, not a transformer", self.i)
            self.expect(")")
            return FieldValue(ref)
        word = self.peek_word()
        if word in TRANSFORMERS and self.s.startswith("(", self.i + len(word)):
            return FieldValue(self.field())
        return None

    def name(self) -> str:
        j = self.i
        while j < self.n and _is_name_char(self.s[j]):
            j += 1
        name = self.s[self.i:j]
        if not name:
            raise ConditionSyntaxError("expected a name", self.i)
        self.i = j
        return name

    def operator(self) -> Optional[str]:
        self.ws()
        for sym in SYMBOL_OPS:
            if self.s.startswith(sym, self.i):
                self.i += len(sym)
                return "=" if sym == "==" else sym
        word = self.peek_word()
        if word in WORD_OPS:
            self.i += len(word)
            return word
        return None

    def value(self, op: str) -> Value:
        self.ws()
        if self.i >= self.n:
            raise ConditionSyntaxError(f"operator {op!r} needs a value", self.i)
        c = self.s[self.i]
        if op in LIST_OPS and c == "(":
            return self.list_value()
        other = self.transformed()
        if other is not None:
            return other
        if op in LIST_OPS:
            m = _IDENTIFIER.match(self.s, self.i)
            if m is None:
                raise ConditionSyntaxError(f"operator {op!r} needs a list '(...)', an "
                                           "identifier or a transformed field", self.i)
            self.i = m.end()
            return ListValue((Literal(m.group(0), False),))
        if op in ORDER_OPS:
            m = _NUMBER.match(self.s, self.i)
            if m is None:
                raise ConditionSyntaxError(f"operator {op!r} needs a number value or a field "
                                           "with a transformer (val(), tolower(), ...)", self.i)
            self.i = m.end()
            return Literal(m.group(0), False)
        if c in "\"'":
            return Literal(self.quoted(), True)
        return Literal(self.bare(_BARE_STOP, op), False)

    def list_value(self) -> ListValue:
        self.expect("(")
        items: list[Union[Literal, ListValue]] = []
        self.ws()
        if self.i < self.n and self.s[self.i] == ")":
            self.i += 1
            return ListValue(())
        while True:
            self.ws()
            if self.i >= self.n:
                raise ConditionSyntaxError("unterminated list", self.i)
            c = self.s[self.i]
            if c == "(":
                items.append(self.list_value())
            elif c in "\"'":
                items.append(Literal(self.quoted(), True))
            else:
                items.append(Literal(self.bare(_LIST_ITEM_STOP, "in"), False))
            self.ws()
            if self.i < self.n and self.s[self.i] == ",":
                self.i += 1
                continue
            self.expect(")")
            return ListValue(tuple(items))

    def quoted(self) -> str:
        quote = self.s[self.i]
        start = self.i
        self.i += 1
        out: list[str] = []
        while self.i < self.n:
            c = self.s[self.i]
            if c == "\\" and self.i + 1 < self.n and self.s[self.i + 1] in (quote, "\\"):
                out.append(self.s[self.i + 1])
                self.i += 2
                continue
            if c == quote:
                self.i += 1
                return "".join(out)
            out.append(c)
            self.i += 1
        raise ConditionSyntaxError("unterminated quoted string", start)

    def bare(self, stop: set[str], op: str) -> str:
        """A bare value: up to a blank, parenthesis, quote, ``=`` or ``,`` (libs' bare
        string)."""
        j = self.i
        while j < self.n and self.s[j] not in stop:
            j += 1
        if j == self.i:
            raise ConditionSyntaxError(f"operator {op!r} needs a value", self.i)
        text = self.s[self.i:j]
        self.i = j
        return text


def parse_condition(text: str) -> Node:
    """Parse one condition; raises :class:`ConditionSyntaxError` with the offset."""
    return _Parser(text).parse()


def macro_refs(node: Node) -> list[MacroRef]:
    """Every macro reference in the tree, in order."""
    out: list[MacroRef] = []
    stack: list[Node] = [node]
    while stack:
        cur = stack.pop()
        if isinstance(cur, MacroRef):
            out.append(cur)
        elif isinstance(cur, Not):
            stack.append(cur.child)
        elif isinstance(cur, (And, Or)):
            stack.extend(reversed(cur.children))
    return out


def parse_field_at(text: str, start: int) -> tuple[FieldRef, int]:
    """The field (or transformed field) written at ``text[start:]``, and where it ends."""
    p = _Parser(text)
    p.i = start
    return p.field(), p.i
