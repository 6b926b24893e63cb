"""Falco's condition grammar, parsed into a small AST (no field knowledge here).

Grammar (precedence low to high)::

    expr   := and ('or' and)*
    and    := not ('and' not)*
    not    := 'not' not | atom
    atom   := '(' expr ')' | field UNARY | field BINARY value | macro-name
    field  := [transformer '('] name ['[' arg ']'] [')']
    value  := quoted | bare | 'val(' field ')' | '(' item (',' item)* ')'

Bare list items that name a ``list`` are expanded later by the compiler; quoted items never
are. Parsing is done once per rule at load time, so it favours clear errors (with the
character offset) over speed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

UNARY_OPS = frozenset({"exists"})
LIST_OPS = frozenset({"in", "intersects", "pmatch"})
WORD_OPS = frozenset({
    "contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith", "glob",
    "iglob", "regex", "in", "intersects", "pmatch", "exists",
})
SYMBOL_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")
TRANSFORMERS = frozenset({"tolower", "toupper", "b64", "basename", "len"})
_KEYWORDS = frozenset({"and", "or", "not"})
_BARE_STOP = set(" \t\r\n(),\"'")
_LIST_ITEM_STOP = set(" \t\r\n(),\"'")


class ConditionSyntaxError(ValueError):
    """A condition that does not parse; ``offset`` is the character position in the text."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} (at offset {offset})")
        self.reason = message
        self.offset = offset


@dataclass(frozen=True)
class FieldRef:
    name: str
    arg: Optional[str]
    transformers: tuple[str, ...]  # innermost first

    def __str__(self) -> str:
        text = self.name + (f"[{self.arg}]" if self.arg is not None else "")
        for t in self.transformers:
            text = f"{t}({text})"
        return text


@dataclass(frozen=True)
class Literal:
    text: str
    quoted: bool


@dataclass(frozen=True)
class ListValue:
    items: tuple[Union[Literal, "ListValue"], ...]


@dataclass(frozen=True)
class FieldValue:
    """``val(other.field)``: compare against another field of the same event."""

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
            if field.arg is not None or field.transformers or field.name in _KEYWORDS:
                raise ConditionSyntaxError(f"{field} needs an operator", self.i)
            return MacroRef(field.name, start)
        if op in UNARY_OPS:
            return Check(field, op, None, start)
        return Check(field, op, self.value(op), start)

    def field(self) -> FieldRef:
        start = self.i
        name = self.name()
        self.ws()
        if name in TRANSFORMERS and self.i < self.n and self.s[self.i] == "(":
            self.i += 1
            self.ws()
            inner = self.field()
            self.expect(")")
            return FieldRef(inner.name, inner.arg, inner.transformers + (name,))
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
        if op in LIST_OPS:
            if c != "(":
                raise ConditionSyntaxError(f"operator {op!r} needs a list '(...)'", self.i)
            return self.list_value()
        if c in "\"'":
            return Literal(self.quoted(), True)
        if self.s.startswith("val(", self.i):
            self.i += 4
            self.ws()
            ref = self.field()
            self.expect(")")
            return FieldValue(ref)
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
        j = self.i
        depth = 0
        while j < self.n:
            c = self.s[j]
            if c == "[":
                depth += 1
            elif c == "]" and depth:
                depth -= 1
            elif c in stop and not depth:
                break
            j += 1
        if j == self.i:
            raise ConditionSyntaxError(f"operator {op!r} needs a value", self.i)
        text = self.s[self.i:j]
        self.i = j
        return text


def parse_condition(text: str) -> Node:
    """Parse one condition; raises :class:`ConditionSyntaxError` with the offset."""
    return _Parser(text).parse()


def split_list_item(text: str) -> str:
    """A YAML ``list`` item as a value: Falco lets items carry their own quotes ('"a b"')."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return _Parser(text).quoted()
    return text


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


def parse_field(text: str) -> FieldRef:
    """One field reference on its own (exception ``fields:`` entries)."""
    p = _Parser(text.strip())
    if not p.s or not _is_name_start(p.s[0]):
        raise ConditionSyntaxError(f"expected a field name, got {text!r}", 0)
    ref = p.field()
    p.ws()
    if p.i < p.n:
        raise ConditionSyntaxError(f"unexpected text after field {text!r}", p.i)
    return ref
