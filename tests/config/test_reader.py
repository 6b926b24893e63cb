"""The YAML reader on each parser PyYAML offers here (libyaml's C parser when built, the pure
one always): the same data, the same lines, the same YAML 1.2 text scalars for rules files."""

from __future__ import annotations

from typing import Any

import pytest

from otelguard.config import ConfigError
from otelguard.config.reader import LIBYAML, LOADERS, PARSER, LocatedDict, LocatedList, load_yaml
from otelguard.processors.detection.engine import RULES_DIR

PARSERS = sorted(LOADERS)
RULES_TEXT = "- macro: m\n  condition: fd.name = /x\n- list: odd\n  items: [=, 0644, 10:30, no, on]\n"


def _same(a: Any, b: Any, where: str = "$") -> None:
    assert type(a) is type(b), where
    if isinstance(a, LocatedDict):
        assert (list(a), a.line, a.key_lines) == (list(b), b.line, b.key_lines), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, LocatedList):
        assert (len(a), a.line, a.item_lines) == (len(b), b.line, b.item_lines), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def test_libyaml_is_the_default_when_built() -> None:
    assert PARSER == ("libyaml" if LIBYAML else "python")
    assert "python" in LOADERS  # the fallback is always there


@pytest.mark.parametrize("parser", PARSERS)
def test_rules_scalars_stay_text_on_each_parser(parser: str) -> None:
    doc = load_yaml(RULES_TEXT + "- rule: r\n  output: ~\n  enabled:\n", text_scalars=True,
                    parser=parser)
    assert doc[1]["items"] == ["=", "0644", "10:30", "no", "on"]
    assert doc[2]["output"] is None and doc[2]["enabled"] is None
    assert doc.item_lines == [1, 3, 5] and doc[1].key_lines == {"list": 3, "items": 4}
    config = load_yaml("mode: 0644\nflag: on\n", parser=parser)  # config files: YAML 1.1 types
    assert config == {"mode": 420, "flag": True}


@pytest.mark.parametrize("parser", PARSERS)
def test_syntax_error_has_line_on_each_parser(parser: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml("a: 1\nb: [1, 2\nc: 3\n", "x.yaml", parser=parser)
    assert info.value.issues[0].line == 3


@pytest.mark.skipif(not LIBYAML, reason="PyYAML built without libyaml")
@pytest.mark.parametrize("text_scalars", [True, False])
def test_shipped_rules_parse_identically(text_scalars: bool) -> None:
    files = sorted(RULES_DIR.rglob("*.yaml"))
    assert files
    for path in files:
        text = path.read_text()
        _same(load_yaml(text, text_scalars=text_scalars, parser="python"),
              load_yaml(text, text_scalars=text_scalars, parser="libyaml"), path.name)
