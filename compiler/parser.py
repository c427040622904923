"""Reads .lpu text into a verified `Module`: syntax, names (SSA), and types.

Parsing and verification happen in one walk so that every error points at the
place in the file it is about. Result types may be omitted wherever the op's
rule can infer them; a written type must agree with the inferred one.
"""

from __future__ import annotations

import difflib
import importlib.resources

import lark
from lark import Token, Tree

from compiler.ir import Commit, Global, Graph, Module, Op, Operand, TensorType, Value, freeze_attr
from compiler.ops import MAX_ELEMENTS, OPS, OpError, infer
from isa.diagnostics import Diagnostic, Loc, LpuError, Source, error
from isa.files import read_bytes
from isa.spec import DTYPES

_GRAMMAR = importlib.resources.files("compiler").joinpath("grammar.lark").read_text()
_PARSER = lark.Lark(_GRAMMAR, parser="lalr", lexer="contextual", maybe_placeholders=True)

# How the grammar's terminals are named to the user.
_TERMINAL_WORDS = {
    "LOCAL": "a value (%name)",
    "GLOBAL": "a symbol (@name)",
    "NAME": "a name",
    "INT": "an integer",
    "FLOAT": "a number",
    "STRING": "a string",
    "$END": "end of file",
}
_LITERALS = {t.name: f"'{t.pattern.value}'" for t in _PARSER.terminals if t.pattern.type == "str"}


def parse(text: str | bytes, filename: str = "<input>") -> Module:
    """Parse and verify one module. Raises LpuError with located diagnostics."""
    source = _source(text, filename)
    if not source.text.strip() or all(
        not line.strip() or line.lstrip().startswith("#") for line in source.text.splitlines()
    ):
        raise error("empty file: expected 'module NAME'", Loc(source, 1, 1))
    try:
        tree = _PARSER.parse(source.text)
    except lark.exceptions.UnexpectedInput as e:
        raise _syntax_error(e, source) from None
    try:
        return _Builder(source).module(tree)
    except RecursionError:
        raise error("the file is nested too deeply to read", Loc(source, 1, 1)) from None


def parse_file(path: str) -> Module:
    return parse(read_bytes(path), path)


def _source(text: str | bytes, filename: str) -> Source:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            before = text[: e.start]
            line = before.count(b"\n") + 1
            col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
            shown = Source(filename, text.decode("utf-8", errors="replace"))
            raise error(
                f"file is not UTF-8 text: byte 0x{text[e.start]:02x} cannot be decoded",
                Loc(shown, line, col),
            ) from None
    if "\x00" in text:
        at = text.index("\x00")
        line = text.count("\n", 0, at) + 1
        col = at - (text.rfind("\n", 0, at) + 1) + 1
        raise error("file contains a NUL byte; is it a binary file?", Loc(Source(filename, text), line, col))
    return Source(filename, text)


def _words(expected: set[str]) -> str:
    if {"INT", "FLOAT", "STRING"} <= expected:
        return "an attribute value"
    words = sorted({_LITERALS.get(t) or _TERMINAL_WORDS.get(t) or t.lower() for t in expected})
    # punctuation first, then keywords, then descriptions
    words.sort(key=lambda w: (not (w.startswith("'") and not w[1].isalpha()), not w.startswith("'"), w))
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " or " + words[-1]


def _shown(token: Token) -> str:
    value = str(token)
    if len(value) > 24:
        value = value[:21] + "..."
    return f"'{value}'"


def _expected(e: lark.exceptions.UnexpectedInput) -> set[str]:
    """The terminals the parser would really accept here.

    LALR merges look-ahead sets across contexts (a type ends an argument, a
    declaration and a statement alike), so `e.expected` over-approximates;
    the interactive parser tries each terminal through the pending reductions.
    """
    expected = set(getattr(e, "expected", None) or ())
    interactive = getattr(e, "interactive_parser", None)
    if interactive is not None:
        try:
            accepted = set(interactive.accepts())
        except Exception:  # an internal lark failure must not hide the user's error
            accepted = set()
        if accepted:
            return accepted
    return expected


def _syntax_error(e: lark.exceptions.UnexpectedInput, source: Source) -> LpuError:
    if isinstance(e, lark.exceptions.UnexpectedToken):
        if e.token.type == "$END":
            return error(f"unexpected end of file; expected {_words(_expected(e))}", _end(source))
        loc = Loc(source, e.token.line, e.token.column)
        return error(f"expected {_words(_expected(e))}, got {_shown(e.token)}", loc)
    if isinstance(e, lark.exceptions.UnexpectedCharacters):
        loc = Loc(source, e.line, e.column)
        char = source.text[e.pos_in_stream] if e.pos_in_stream < len(source.text) else "?"
        if char == '"':
            return error("unterminated string", loc)
        if char in "%@":
            return error(f"'{char}' must be followed by a name", loc)
        shown = repr(char)[1:-1] if not char.isprintable() else char
        return error(f"unexpected character '{shown}'", loc)
    if isinstance(e, lark.exceptions.UnexpectedEOF):
        return error(f"unexpected end of file; expected {_words(_expected(e))}", _end(source))
    raise AssertionError(f"unknown lark error {e!r}")


def _end(source: Source) -> Loc:
    lines = source.text.splitlines() or [""]
    return Loc(source, len(lines), len(lines[-1]) + 1)


def _tok_loc(source: Source, tok: Token) -> Loc:
    return Loc(source, tok.line, tok.column)


class _Builder:
    """Walks the lark tree; resolves names, infers and checks types, records locations."""

    def __init__(self, source: Source):
        self.source = source
        self.globals: dict[str, Global] = {}

    def loc(self, tok: Token) -> Loc:
        return _tok_loc(self.source, tok)

    def fail(self, message: str, tok: Token | Loc | None, notes: tuple[Diagnostic, ...] = ()) -> LpuError:
        loc = tok if isinstance(tok, Loc) or tok is None else self.loc(tok)
        return LpuError(Diagnostic(message, loc, notes=notes))

    # -- module ------------------------------------------------------------------
    def module(self, tree: Tree) -> Module:
        header, *items = tree.children
        name_tok = header.children[0]
        graphs_trees = []
        for item in items:
            if item.data in ("param_decl", "state_decl"):
                self.declare(item)
            else:
                graphs_trees.append(item)
        graphs: list[Graph] = []
        seen: dict[str, Loc] = {}
        for gt in graphs_trees:
            g = self.graph(gt)
            if g.name in seen:
                raise self.fail(
                    f"graph '{g.name}' is defined twice",
                    g.loc,
                    (Diagnostic("first defined here", seen[g.name], "note"),),
                )
            seen[g.name] = g.loc
            graphs.append(g)
        return Module(str(name_tok), tuple(self.globals.values()), tuple(graphs), self.loc(name_tok))

    def declare(self, item: Tree) -> None:
        name_tok, type_tree = item.children
        name = str(name_tok)[1:]
        kind = "param" if item.data == "param_decl" else "state"
        if name in self.globals:
            first = self.globals[name]
            raise self.fail(
                f"redefinition of @{name}",
                name_tok,
                (Diagnostic(f"first defined here as a {first.kind}", first.loc, "note"),),
            )
        self.globals[name] = Global(kind, name, self.type(type_tree), self.loc(name_tok))

    def type(self, tree: Tree) -> TensorType:
        dtype_tok, *dims = tree.children
        if str(dtype_tok) not in DTYPES:
            raise self.fail(f"unknown dtype '{dtype_tok}'; known dtypes: {', '.join(DTYPES)}", dtype_tok)
        shape = []
        for d in dims:
            if d is None:  # the empty shape of a scalar: f32[]
                continue
            value = int(d)
            if value < 1:
                raise self.fail(f"dimension must be at least 1, got {value}", d)
            if value > MAX_ELEMENTS:
                raise self.fail(
                    f"dimension {value} is larger than the {MAX_ELEMENTS} elements a tensor may have", d
                )
            shape.append(value)
        t = TensorType(str(dtype_tok), tuple(shape))
        if t.size > MAX_ELEMENTS:
            raise self.fail(
                f"type {t} has {t.size} elements, more than the {MAX_ELEMENTS} a tensor may have", dtype_tok
            )
        return t

    # -- graphs ------------------------------------------------------------------
    def graph(self, tree: Tree) -> Graph:
        name_tok, arg_list, type_list, *stmts, ret = tree.children
        scope: dict[str, Value] = {}
        args = []
        for arg in arg_list.children:
            if arg is None:
                continue
            tok, type_tree = arg.children
            self.define(scope, tok)
            v = Value(self.type(type_tree), str(tok)[1:], self.loc(tok))
            scope[v.name] = v
            args.append(v)
        result_types = tuple(self.type(t) for t in type_list.children if t is not None)
        body: list[Op | Commit] = []
        committed: dict[str, Loc] = {}
        for st in stmts:
            if st.data == "op_stmt":
                op = self.op(st, scope)
                scope[op.result.name] = op.result
                body.append(op)
            else:
                body.append(self.commit(st, scope, committed))
        results, result_locs = [], []
        for tok in ret.children[0].children:
            if tok is None:
                continue
            results.append(self.use(scope, tok))
            result_locs.append(self.loc(tok))
        graph_loc = self.loc(name_tok)
        if len(results) != len(result_types):
            where = result_locs[0] if result_locs else graph_loc
            raise self.fail(
                f"graph '{name_tok}' returns {len(result_types)} value"
                f"{'s' if len(result_types) != 1 else ''} but return lists "
                f"{len(results)}",
                where,
            )
        for r, t, loc in zip(results, result_types, result_locs):
            if r.type != t:
                raise self.fail(
                    f"return value {_name(r)} is {r.type} but graph '{name_tok}' declares {t}", loc
                )
        return Graph(
            str(name_tok),
            tuple(args),
            result_types,
            tuple(body),
            tuple(results),
            graph_loc,
            tuple(result_locs),
        )

    def define(self, scope: dict[str, Value], tok: Token) -> None:
        name = str(tok)[1:]
        if name in scope:
            raise self.fail(
                f"redefinition of %{name}", tok, (Diagnostic("first defined here", scope[name].loc, "note"),)
            )

    def use(self, scope: dict[str, Value], tok: Token) -> Operand:
        text = str(tok)
        if tok.type == "GLOBAL":
            if text[1:] not in self.globals:
                raise self.fail(f"use of undefined symbol {text}{_suggest(text[1:], self.globals, '@')}", tok)
            return self.globals[text[1:]]
        if text[1:] not in scope:
            raise self.fail(f"use of undefined value {text}{_suggest(text[1:], scope, '%')}", tok)
        return scope[text[1:]]

    def op(self, st: Tree, scope: dict[str, Value]) -> Op:
        result_tok, name_tok, operand_list, attr_dict, type_tree = st.children
        self.define(scope, result_tok)
        name = str(name_tok)
        if name not in OPS:
            raise self.fail(f"unknown op '{name}'{_suggest(name, OPS, '')}", name_tok)
        operands, operand_locs = [], []
        for tok in operand_list.children:
            if tok is None:
                continue
            operands.append(self.use(scope, tok))
            operand_locs.append(self.loc(tok))
        attrs: dict[str, object] = {}
        attr_locs: dict[str, Loc] = {}
        if attr_dict is not None:
            for attr in attr_dict.children:
                if attr is None:
                    continue
                key_tok, value_tree = attr.children
                key = str(key_tok)
                if key in attrs:
                    raise self.fail(f"attribute '{key}' is given twice", key_tok)
                attrs[key] = freeze_attr(self.value(value_tree))
                attr_locs[key] = self.loc(key_tok)
        declared = self.type(type_tree) if type_tree is not None else None
        type_loc = self.loc(type_tree.children[0]) if type_tree is not None else None
        op_loc = self.loc(name_tok)
        try:
            result_type = infer(name, [o.type for o in operands], attrs, declared)
        except OpError as e:
            raise self.fail(e.message, _where(e.where, op_loc, operand_locs, attr_locs, type_loc)) from None
        keys = sorted(attrs)
        return Op(
            name,
            tuple(operands),
            Value(result_type, str(result_tok)[1:], self.loc(result_tok)),
            tuple((k, attrs[k]) for k in keys),
            op_loc,
            tuple(operand_locs),
            tuple(attr_locs[k] for k in keys),
            type_loc,
        )

    def commit(self, st: Tree, scope: dict[str, Value], committed: dict[str, Loc]) -> Commit:
        state_tok, value_tok = st.children
        state = self.use(scope, state_tok)
        assert isinstance(state, Global)
        if state.kind != "state":
            raise self.fail(f"commit needs a state, but @{state.name} is a param", state_tok)
        if state.name in committed:
            raise self.fail(
                f"@{state.name} is committed twice in one graph",
                state_tok,
                (Diagnostic("first committed here", committed[state.name], "note"),),
            )
        value = self.use(scope, value_tok)
        if value.type != state.type:
            raise self.fail(
                f"commit of {_name(value)} ({value.type}) to @{state.name} ({state.type}): the types differ",
                value_tok,
            )
        committed[state.name] = self.loc(state_tok)
        return Commit(state, value, self.loc(state_tok), self.loc(value_tok))

    def value(self, tree: Tree | Token) -> object:
        kind = tree.data
        if kind == "int_value":
            return int(tree.children[0])
        if kind == "float_value":
            text = str(tree.children[0])
            return float(text)
        if kind == "string_value":
            return _unescape(str(tree.children[0])[1:-1])
        if kind == "true_value":
            return True
        if kind == "false_value":
            return False
        if kind == "list_value":
            return [self.value(c) for c in tree.children if c is not None]
        raise AssertionError(kind)


def _where(
    where: object, op_loc: Loc, operand_locs: list[Loc], attr_locs: dict[str, Loc], type_loc: Loc | None
) -> Loc:
    if where == "type" and type_loc is not None:
        return type_loc
    if isinstance(where, tuple) and where[0] == "operand" and where[1] < len(operand_locs):
        return operand_locs[where[1]]
    if isinstance(where, tuple) and where[0] == "attr" and where[1] in attr_locs:
        return attr_locs[where[1]]
    return op_loc


def _name(v: Operand) -> str:
    return f"@{v.name}" if isinstance(v, Global) else f"%{v.name}"


def _suggest(name: str, known, sigil: str) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
    return f"; did you mean '{sigil}{close[0]}'?" if close else ""


def _unescape(body: str) -> str:
    out, i = [], 0
    table = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 1 < len(body):
            out.append(table.get(body[i + 1], body[i + 1]))
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)
