"""An offline renderer for the subset of Helm templates that helm/mixer-ext uses.

Why: Helm cannot be installed from any registry reachable where this project's CI
runs, yet the chart's output must be checked (kubernetes-validate, no Secret value in
a ConfigMap).  So this module renders the chart the way ``helm template`` does, for
exactly the constructs the chart uses, and refuses anything else loudly (an unknown
function, keyword or syntax is an error, never silently ignored):

- actions ``{{ }}`` with ``{{-``/``-}}`` whitespace trimming, ``{{/* comments */}}``;
- ``if``/``else if``/``else``, ``range`` over lists and maps (``$i, $v :=``), ``with``,
  ``define`` + ``include``, variables (``$x :=``, ``$``), pipelines, parentheses;
- ``.Values``, ``.Release``, ``.Chart``, ``.Files.Get``;
- the functions in ``FUNCTIONS`` below, with Helm/sprig semantics (values-file numbers
  are float64 as in Helm, printed as Go prints them; toJson/toYaml sort keys).

toYaml uses PyYAML's block layout, which is go-yaml's for the values this chart passes
it (a string go-yaml quotes differently would still be the same data).  The output
was cross-checked byte for byte against Helm's own engine (tests/helm_crosscheck.py).
The committed renderings in helm/rendered/ come from here: ``make helm-render``
rewrites them, and tests/test_helm.py fails when the chart and the renderings disagree.

Run: ``python -m tests.helm_util`` (renders every helm/examples/*.yaml).
"""

from __future__ import annotations

import base64
import json
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART_DIR = ROOT / "helm" / "mixer-ext"
EXAMPLES_DIR = ROOT / "helm" / "examples"
RENDERED_DIR = ROOT / "helm" / "rendered"


class TemplateError(Exception):
    """A template the renderer cannot parse or evaluate, or a ``fail``/``required``."""


# --------------------------------------------------------------------------- lexing
@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    body: str
    where: str


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_COMMENT = re.compile(r"^/\*.*\*/$", re.DOTALL)


def lex(source: str, name: str) -> list[_Text | _Action]:
    """Split template text into text and actions, applying the trim markers."""
    items: list[_Text | _Action] = []
    pos = 0
    trim_next = False
    for m in _ACTION.finditer(source):
        text = source[pos : m.start()]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if m.group(1):
            text = text.rstrip(" \t\r\n")
        items.append(_Text(text))
        body = m.group(2).strip()
        line = source.count("\n", 0, m.start()) + 1
        if "{{" in body:
            raise TemplateError(f"{name}:{line}: unclosed action")
        if not _COMMENT.match(body):
            items.append(_Action(body, f"{name}:{line}"))
        elif "*/" in body[2:-2]:
            raise TemplateError(f"{name}:{line}: bad comment")
        trim_next = bool(m.group(3))
        pos = m.end()
    rest = source[pos:]
    if trim_next:
        rest = rest.lstrip(" \t\r\n")
    if "{{" in rest or "}}" in rest:
        raise TemplateError(f"{name}: unbalanced '{{{{' or '}}}}' after the last action")
    items.append(_Text(rest))
    return items


# --------------------------------------------------------------------------- expressions
_TOKEN = re.compile(
    r"""\s*(?:
    (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<num>-?\d+(?:\.\d+)?)
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<pipe>\|)
  | (?P<lparen>\()
  | (?P<rparen>\))
  | (?P<comma>,)
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)


def _tokens(body: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    body = body.rstrip()
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if not m or m.end() == pos:
            raise TemplateError(f"{where}: cannot parse {body[pos:]!r}")
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
        # a field chain right after ")" e.g. (include ...).x is not used: refuse it
        if kind == "rparen" and pos < len(body) and body[pos] == ".":
            raise TemplateError(f"{where}: field access on a parenthesised value is unsupported")
    return out


@dataclass
class Node:
    kind: str  # lit, field, var, call, pipe
    value: Any = None
    args: list[Node] = field(default_factory=list)


@dataclass
class Pipeline:
    decl: list[str]
    commands: list[list[Node]]
    where: str


class _Parser:
    def __init__(self, toks: list[tuple[str, str]], where: str) -> None:
        self.toks = toks
        self.i = 0
        self.where = where

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            raise TemplateError(f"{self.where}: unexpected end of action")
        self.i += 1
        return tok

    def pipeline(self, allow_decl: bool = True) -> Pipeline:
        decl: list[str] = []
        if allow_decl:
            j = self.i
            names: list[str] = []
            while j < len(self.toks) and self.toks[j][0] == "var":
                names.append(self.toks[j][1])
                j += 1
                if j < len(self.toks) and self.toks[j][0] == "comma":
                    j += 1
                    continue
                break
            if names and j < len(self.toks) and self.toks[j][0] == "declare":
                decl = names
                self.i = j + 1
            elif names and j < len(self.toks) and self.toks[j][0] == "assign":
                raise TemplateError(f"{self.where}: variable assignment '=' is unsupported")
        commands = [self.command()]
        while (tok := self.peek()) is not None and tok[0] == "pipe":
            self.take()
            commands.append(self.command())
        return Pipeline(decl, commands, self.where)

    def command(self) -> list[Node]:
        operands: list[Node] = []
        while (tok := self.peek()) is not None and tok[0] not in ("pipe", "rparen"):
            operands.append(self.operand())
        if not operands:
            raise TemplateError(f"{self.where}: empty command")
        return operands

    def operand(self) -> Node:
        kind, text = self.take()
        if kind == "str":
            return Node("lit", json.loads(text))
        if kind == "raw":
            return Node("lit", text[1:-1])
        if kind == "num":
            return Node("lit", float(text) if "." in text else int(text))
        if kind == "field":
            return Node("field", [] if text == "." else text[1:].split("."))
        if kind == "var":
            name, *path = text.split(".")
            return Node("var", (name, path))
        if kind == "ident":
            if text in ("true", "false"):
                return Node("lit", text == "true")
            if text == "nil":
                return Node("lit", None)
            if text not in FUNCTIONS and text != "include":
                raise TemplateError(f"{self.where}: unknown function {text!r}")
            return Node("call", text)
        if kind == "lparen":
            inner = self.pipeline(allow_decl=False)
            if self.take()[0] != "rparen":
                raise TemplateError(f"{self.where}: missing ')'")
            return Node("pipe", inner)
        raise TemplateError(f"{self.where}: unexpected {text!r}")


def parse_pipeline(body: str, where: str) -> Pipeline:
    p = _Parser(_tokens(body, where), where)
    pipe = p.pipeline()
    if p.peek() is not None:
        raise TemplateError(f"{where}: unexpected {p.peek()!r}")
    return pipe


# --------------------------------------------------------------------------- tree
@dataclass
class Block:
    kind: str  # if, range, with
    branches: list[tuple[Pipeline, list[Any]]]
    otherwise: list[Any] | None
    where: str


_KEYWORD = re.compile(
    r"^(if|else if|else|end|range|with|define|template|block)\b\s*(.*)$", re.DOTALL
)


def parse(items: list[_Text | _Action], defines: dict[str, list[Any]]) -> list[Any]:
    """Build the node tree; ``define`` bodies go into ``defines``."""
    stack: list[tuple[str, list[Any], Any]] = []  # (kind, current body, Block|name)
    body: list[Any] = []
    root = body
    for item in items:
        if isinstance(item, _Text):
            if item.text:
                body.append(item.text)
            continue
        m = _KEYWORD.match(item.body)
        if not m:
            body.append(parse_pipeline(item.body, item.where))
            continue
        word, rest = m.group(1), m.group(2)
        if word in ("if", "range", "with"):
            block = Block(word, [(parse_pipeline(rest, item.where), [])], None, item.where)
            body.append(block)
            stack.append((word, body, block))
            body = block.branches[0][1]
        elif word == "define":
            name = json.loads(rest.strip())
            stack.append(("define", body, name))
            body = []
            defines[name] = body
        elif word in ("else if", "else"):
            if not stack or stack[-1][0] not in ("if", "range", "with"):
                raise TemplateError(f"{item.where}: {word} outside if/range/with")
            block = stack[-1][2]
            if block.otherwise is not None:
                raise TemplateError(f"{item.where}: {word} after else")
            if word == "else if":
                if block.kind != "if":
                    raise TemplateError(f"{item.where}: else if inside {block.kind}")
                block.branches.append((parse_pipeline(rest, item.where), []))
                body = block.branches[-1][1]
            else:
                block.otherwise = []
                body = block.otherwise
        elif word == "end":
            if not stack:
                raise TemplateError(f"{item.where}: end without a block")
            _, body, _ = stack.pop()
        else:
            raise TemplateError(f"{item.where}: {word!r} is not supported by this renderer")
    if stack:
        raise TemplateError(f"block {stack[-1][0]!r} is never closed (missing end)")
    return root


# --------------------------------------------------------------------------- Go formatting
def go_float(x: float) -> str:
    """``fmt.Sprint(float64)``: strconv's 'g' with the shortest digits, so %e from an
    exponent of 6 on (Helm prints a values-file 1000000 as 1e+06)."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if x == 0:
        return "0"
    digits, exp = _shortest(x)
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        sign = "-" if x < 0 else ""
        return f"{sign}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"
    return _fixed(x, digits, exp)


def _shortest(x: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of |x| (as Go's strconv and Python's repr give)
    and the decimal exponent of the first digit."""
    d = Decimal(repr(abs(x))).as_tuple()
    digits = "".join(map(str, d.digits)).rstrip("0") or "0"
    assert isinstance(d.exponent, int)
    return digits, len(d.digits) + d.exponent - 1


def _fixed(x: float, digits: str, exp: int) -> str:
    sign = "-" if x < 0 else ""
    if exp >= 0:
        if len(digits) <= exp + 1:
            return sign + digits + "0" * (exp + 1 - len(digits))
        return sign + digits[: exp + 1] + "." + digits[exp + 1 :]
    return sign + "0." + "0" * (-exp - 1) + digits


def go_json_float(x: float) -> str:
    """encoding/json's float64: 'f' format unless the magnitude is < 1e-6 or >= 1e21."""
    if x == 0:
        return "0"
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        return go_float(x)
    digits, exp = _shortest(x)
    return _fixed(x, digits, exp)


def go_str(value: Any) -> str:
    """How Go's fmt prints a value (``{{ x }}``, sprig strval)."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_str(value[k])}" for k in sorted(value)) + "]"
    raise TemplateError(f"cannot print a {type(value).__name__}")


def go_quote(s: str) -> str:
    """Go's %q (strconv.Quote) for the characters a chart value can hold."""
    out = ['"']
    for ch in s:
        o = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif o < 0x20 or o == 0x7F:
            out.append(f"\\x{o:02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """json.Marshal: sorted keys, compact, HTML-safe escapes, Go number formatting."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_json_float(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
            text = text.replace(ch, esc)
        return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    if isinstance(value, list):
        return "[" + ",".join(go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{go_json(str(k))}:{go_json(value[k])}" for k in sorted(value)) + "}"
    raise TemplateError(f"toJson: cannot encode a {type(value).__name__}")


def _yaml_data(value: Any) -> Any:
    """Values as Helm's toYaml sees them after its JSON round trip (2.0 -> 2)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return int(value)
    if isinstance(value, list):
        return [_yaml_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _yaml_data(v) for k, v in value.items()}
    return value


def go_yaml(value: Any) -> str:
    """Helm's toYaml: YAML of the value without the final newline.  Block style, sorted
    keys, sequences not indented under their key: the layout go-yaml writes too."""
    text = yaml.dump(
        _yaml_data(value),
        Dumper=yaml.SafeDumper,
        default_flow_style=False,
        sort_keys=True,
        allow_unicode=True,
        width=1 << 30,
    )
    if text.endswith("...\n"):  # PyYAML's explicit end of a bare scalar document
        text = text[: -len("...\n")]
    return text.rstrip("\n")


def _empty(value: Any) -> bool:
    """sprig's ``empty`` / Go template truth: nil, false, 0, "" and empty collections."""
    if value is None or value is False:
        return True
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, str | list | dict):
        return len(value) == 0
    return False


def _printf(fmt: str, *args: Any) -> str:
    it = iter(args)

    def sub(m: re.Match[str]) -> str:
        verb = m.group(1)
        if verb == "%":
            return "%"
        try:
            arg = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        if verb in ("s", "v"):
            return go_str(arg)
        if verb == "d":
            if isinstance(arg, int) and not isinstance(arg, bool):
                return str(arg)
            return f"%!d({type(arg).__name__}={go_str(arg)})"
        if verb == "q":
            return go_quote(go_str(arg))
        raise TemplateError(f"printf: verb %{verb} is unsupported")

    return re.sub(r"%([%sdvq])", sub, fmt)


def _to_int64(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return 0
    return 0


def _kind(value: Any) -> str:
    if value is None:
        return "invalid"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "slice"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _required(msg: str, value: Any) -> Any:
    if value is None or value == "":
        raise TemplateError(f"execution error: {msg}")
    return value


def _fail(msg: str) -> Any:
    raise TemplateError(f"execution error: {msg}")


def _dict(*kv: Any) -> dict[str, Any]:
    if len(kv) % 2:
        raise TemplateError("dict needs key/value pairs")
    return {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)}


def _trunc(n: int, s: str) -> str:
    if n < 0:
        return s[n:] if len(s) > -n else s
    return s[:n]


def _and(*args: Any) -> Any:
    for a in args:
        if _empty(a):
            return a
    return args[-1]


def _or(*args: Any) -> Any:
    for a in args:
        if not _empty(a):
            return a
    return args[-1]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # text/template built-ins
    "and": _and,
    "or": _or,
    "not": lambda v: _empty(v),
    "len": lambda v: len(v),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "printf": _printf,
    # sprig / Helm
    "add": lambda *xs: sum(_to_int64(x) for x in xs),
    "int": _to_int64,
    "b64enc": lambda s: base64.b64encode(go_str(s).encode()).decode(),
    "contains": lambda sub, s: sub in s,
    "hasPrefix": lambda p, s: s.startswith(p),
    "default": lambda d, *v: d if not v or _empty(v[0]) else v[0],
    "empty": _empty,
    "dict": _dict,
    "fail": _fail,
    "indent": lambda n, s: " " * n + s.replace("\n", "\n" + " " * n),
    "nindent": lambda n, s: "\n" + " " * n + s.replace("\n", "\n" + " " * n),
    "kindIs": lambda k, v: _kind(v) == k,
    "lower": lambda s: s.lower(),
    "upper": lambda s: s.upper(),
    "quote": lambda *xs: " ".join(go_quote(go_str(x)) for x in xs if x is not None),
    "replace": lambda old, new, s: s.replace(old, new),
    "required": _required,
    "toJson": go_json,
    "toYaml": go_yaml,
    "trimSuffix": lambda suf, s: s[: -len(suf)] if suf and s.endswith(suf) else s,
    "trunc": _trunc,
}


# --------------------------------------------------------------------------- evaluation
class _Files:
    """``.Files``: read-only access to files inside the chart (not templates/)."""

    def __init__(self, chart_dir: Path) -> None:
        self._dir = chart_dir

    def Get(self, name: str) -> str:
        path = (self._dir / name).resolve()
        if self._dir.resolve() not in path.parents or not path.is_file():
            return ""
        return path.read_text(encoding="utf-8")


class Renderer:
    def __init__(self, defines: dict[str, list[Any]], root: dict[str, Any]) -> None:
        self.defines = defines
        self.root = root

    def render(self, nodes: list[Any], dot: Any, scope: dict[str, Any]) -> str:
        out: list[str] = []
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, Pipeline):
                value = self.pipeline(node, dot, scope)
                if not node.decl:
                    out.append(go_str(value))
            elif isinstance(node, Block):
                out.append(self.block(node, dot, scope))
        return "".join(out)

    def block(self, block: Block, dot: Any, scope: dict[str, Any]) -> str:
        inner = dict(scope)
        if block.kind == "if":
            for pipe, body in block.branches:
                if not _empty(self.pipeline(pipe, dot, inner)):
                    return self.render(body, dot, inner)
            return self.render(block.otherwise or [], dot, inner)
        pipe, body = block.branches[0]
        if block.kind == "with":
            value = self.pipeline(pipe, dot, inner)
            if not _empty(value):
                return self.render(body, value, inner)
            return self.render(block.otherwise or [], dot, inner)
        # range
        value = self.pipeline(Pipeline([], pipe.commands, pipe.where), dot, inner)
        if value is None or _empty(value):
            return self.render(block.otherwise or [], dot, inner)
        if isinstance(value, dict):
            pairs: list[tuple[Any, Any]] = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, list):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(value)]
        else:
            raise TemplateError(f"{pipe.where}: range over a {type(value).__name__}")
        out = []
        for key, item in pairs:
            loop = dict(inner)
            if len(pipe.decl) == 1:
                loop[pipe.decl[0]] = item
            elif len(pipe.decl) == 2:
                loop[pipe.decl[0]], loop[pipe.decl[1]] = key, item
            elif pipe.decl:
                raise TemplateError(f"{pipe.where}: too many range variables")
            out.append(self.render(body, item, loop))
        return "".join(out)

    def pipeline(self, pipe: Pipeline, dot: Any, scope: dict[str, Any]) -> Any:
        value: Any = None
        for i, command in enumerate(pipe.commands):
            value = self.command(command, dot, scope, [value] if i else [], pipe.where)
        if pipe.decl:
            if len(pipe.decl) != 1:
                raise TemplateError(f"{pipe.where}: two variables outside range")
            scope[pipe.decl[0]] = value
        return value

    def command(
        self, operands: list[Node], dot: Any, scope: dict[str, Any], piped: list[Any], where: str
    ) -> Any:
        head = operands[0]
        if head.kind == "call":
            args = [self.operand(op, dot, scope, where) for op in operands[1:]] + piped
            if head.value == "include":
                if len(args) != 2:
                    raise TemplateError(f"{where}: include takes a name and a context")
                return self.include(args[0], args[1], where)
            try:
                return FUNCTIONS[head.value](*args)
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"{where}: {head.value}: {exc}") from exc
        if head.kind == "field" and (len(operands) > 1 or piped):
            # a method call such as .Files.Get "path"
            method = self.operand(head, dot, scope, where)
            if not callable(method):
                raise TemplateError(f"{where}: can't give arguments to a non-function")
            args = [self.operand(op, dot, scope, where) for op in operands[1:]] + piped
            return method(*args)
        if len(operands) > 1 or piped:
            raise TemplateError(f"{where}: can't give arguments to a non-function")
        return self.operand(head, dot, scope, where)

    def operand(self, node: Node, dot: Any, scope: dict[str, Any], where: str) -> Any:
        if node.kind == "lit":
            return node.value
        if node.kind == "pipe":
            return self.pipeline(node.value, dot, dict(scope))
        if node.kind == "field":
            return self._walk(dot, node.value, where)
        if node.kind == "var":
            name, path = node.value
            if name == "$":
                base = self.root
            elif name in scope:
                base = scope[name]
            else:
                raise TemplateError(f"{where}: undefined variable {name}")
            return self._walk(base, path, where)
        if node.kind == "call":
            if node.value == "include":
                raise TemplateError(f"{where}: include needs arguments")
            return FUNCTIONS[node.value]()
        raise TemplateError(f"{where}: bad operand")

    @staticmethod
    def _walk(base: Any, path: list[str], where: str) -> Any:
        value = base
        for i, key in enumerate(path):
            if isinstance(value, dict):
                value = value.get(key)
            elif value is None:
                shown = "." + ".".join(path[: i + 1])
                raise TemplateError(f"{where}: nil pointer evaluating {shown}")
            elif hasattr(value, key) and not key.startswith("_"):
                value = getattr(value, key)
            else:
                raise TemplateError(f"{where}: can't evaluate field {key}")
        return value

    def include(self, name: str, ctx: Any, where: str) -> str:
        if name not in self.defines:
            raise TemplateError(f"{where}: no template {name!r}")
        return self.render(self.defines[name], ctx, {})


# --------------------------------------------------------------------------- chart
#: Helm's install order (pkg/releaseutil/kind_sorter.go), the subset that matters here.
INSTALL_ORDER = [
    "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget",
    "ServiceAccount", "Secret", "ConfigMap", "StorageClass", "PersistentVolume",
    "PersistentVolumeClaim", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding",
    "Role", "RoleBinding", "Service", "DaemonSet", "Pod", "ReplicationController",
    "ReplicaSet", "Deployment", "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob",
    "IngressClass", "Ingress", "APIService",
]  # fmt: skip


def _helm_numbers(value: Any) -> Any:
    """Helm reads values through JSON: every number becomes a float64."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return float(value)
    if isinstance(value, list):
        return [_helm_numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: _helm_numbers(v) for k, v in value.items()}
    return value


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing: maps merge deeply, anything else replaces, null deletes."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise TemplateError(f"{path}: values must be a mapping")
    return data


def template_files(chart_dir: Path = CHART_DIR) -> list[Path]:
    return sorted(p for p in (chart_dir / "templates").iterdir() if p.is_file())


@dataclass
class Manifest:
    source: str
    text: str
    kind: str


def render_chart(
    values: dict[str, Any],
    *,
    release: str,
    namespace: str = "default",
    chart_dir: Path = CHART_DIR,
    notes: bool = False,
) -> list[Manifest] | str:
    """Render like ``helm template RELEASE CHART -f values`` (``notes``: NOTES.txt only)."""
    chart = load_yaml(chart_dir / "Chart.yaml")
    merged = _helm_numbers(merge_values(load_yaml(chart_dir / "values.yaml"), values))
    root = {
        "Values": merged,
        "Release": {
            "Name": release,
            "Namespace": namespace,
            "Service": "Helm",
            "IsInstall": True,
            "IsUpgrade": False,
            "Revision": 1,
        },
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart.get("appVersion", ""),
        },
        "Files": _Files(chart_dir),
    }
    defines: dict[str, list[Any]] = {}
    trees: dict[str, list[Any]] = {}
    for path in template_files(chart_dir):
        name = f"{chart['name']}/templates/{path.name}"
        trees[name] = parse(lex(path.read_text(encoding="utf-8"), name), defines)
    renderer = Renderer(defines, root)
    if notes:
        name = f"{chart['name']}/templates/NOTES.txt"
        return renderer.render(trees[name], root, {}).replace("<no value>", "")
    manifests: list[Manifest] = []
    for name, tree in trees.items():
        base = name.rsplit("/", 1)[-1]
        if base.startswith("_") or base == "NOTES.txt":
            continue
        text = renderer.render(tree, root, {}).replace("<no value>", "")
        for doc in re.split(r"(?:^|\n)---[ \t]*(?:\n|$)", text):
            if not doc.strip():
                continue
            data = yaml.safe_load(doc)
            if data is None:
                continue
            if not isinstance(data, dict) or "kind" not in data:
                raise TemplateError(f"{name}: a document without a kind")
            manifests.append(Manifest(name, doc.strip(), str(data["kind"])))

    def order(m: Manifest) -> int:
        return INSTALL_ORDER.index(m.kind) if m.kind in INSTALL_ORDER else len(INSTALL_ORDER)

    return sorted(manifests, key=order)


def render_text(manifests: list[Manifest]) -> str:
    """The ``helm template`` stream: ``---`` and a ``# Source:`` line per document."""
    return "".join(f"---\n# Source: {m.source}\n{m.text}\n" for m in manifests)


def example_release(example: Path) -> str:
    """Release name used for an example's reference rendering."""
    return f"room-{example.stem}"


def render_example(example: Path) -> str:
    manifests = render_chart(load_yaml(example), release=example_release(example))
    assert isinstance(manifests, list)
    header = (
        f"# Reference rendering of helm/mixer-ext with {example.relative_to(ROOT)}\n"
        f"# (release {example_release(example)!r}, namespace 'default').  Generated by\n"
        "# `make helm-render` (tests/helm_util.py); do not edit by hand.\n"
    )
    return header + render_text(manifests)


def examples() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))


def main(argv: list[str]) -> int:
    """Rewrite helm/rendered/<example>.yaml for every example values file."""
    RENDERED_DIR.mkdir(parents=True, exist_ok=True)
    wanted = {p.name for p in examples()}
    for stale in RENDERED_DIR.glob("*.yaml"):
        if stale.name not in wanted:
            stale.unlink()
    for example in examples():
        target = RENDERED_DIR / example.name
        try:
            text = render_example(example)
        except TemplateError as exc:
            print(f"helm-render: {example.name}: {exc}", file=sys.stderr)
            return 1
        target.write_text(text, encoding="utf-8")
        print(f"helm-render: wrote {target.relative_to(ROOT)}")
    return 0


def iter_values_paths(templates: list[Path]) -> Iterator[tuple[str, str]]:
    """Every ``.Values.a.b`` path in the templates, with where it occurs."""
    pattern = re.compile(r"\.Values((?:\.[A-Za-z0-9_]+)+)")
    for path in templates:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for m in pattern.finditer(line):
                yield m.group(1)[1:], f"{path.name}:{lineno}"


if __name__ == "__main__":
    sys.exit(main(sys.argv))
