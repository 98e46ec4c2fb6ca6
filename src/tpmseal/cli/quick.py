"""The common command line parsed without :mod:`argparse`, from the same declarations.

Importing argparse (with the :mod:`gettext` and :mod:`locale` it pulls in) and
building its parsers is a few milliseconds of every ``tpmseal unseal`` in a boot
script. The options stay declared once, by each command module's ``register``
functions (which also generate ``--help``, the man pages and shell completion,
tools/cli_docs.py): :func:`parse` runs those functions against recorders that
only note each ``add_argument``, and then reads *argv* itself — but only when the
line is plain: every word an exact option name (or ``--name=value``, the value not
``--``, which argparse 3.11 drops) or, after the sub-command, the value of the next
positional argument (a plain one: a name and at most a type, choices, metavar and
help), each value not starting with ``-`` (``-`` itself is a value), the choices
and types accepting every value, nothing required missing and no mutually exclusive
options together. For anything else it returns None and the caller runs argparse,
so ``--help``, abbreviations and every error message are argparse's own.

The result matches argparse's namespace: action defaults, ``set_defaults``
(overriding the action defaults as argparse does), ``type`` applied to given
values and to string defaults, appended lists copied, each sub-command's values
(``luks passphrase``: two levels) set over those of the parser above it.
"""

from __future__ import annotations

from types import SimpleNamespace

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (cli/main.py: main)
if TYPE_CHECKING:
    from typing import Any

#: add_argument keywords the reader understands; any other makes it defer to argparse
_KEYWORDS = frozenset({"action", "dest", "default", "type", "choices", "required", "help",
                       "metavar", "version"})
_ACTIONS = (None, "store", "store_true", "append", "version")


class Unsupported(Exception):
    """A declaration or a word this reader does not handle: argparse's turn."""


class Option:
    """One declared option, or positional argument."""

    __slots__ = ("action", "choices", "default", "dest", "positional", "required", "type")

    def __init__(self, flags: tuple[str, ...], kw: dict[str, Any]) -> None:
        self.positional = len(flags) == 1 and not flags[0].startswith("-")
        if not flags or kw.keys() - _KEYWORDS or kw.get("action") not in _ACTIONS:
            raise Unsupported
        if self.positional:
            if kw.keys() - {"type", "choices", "metavar", "help"}:
                raise Unsupported
        elif not all(f.startswith("-") for f in flags):
            raise Unsupported
        self.action: str = kw.get("action") or "store"
        long = [f for f in flags if f.startswith("--")]
        self.dest: str = flags[0] if self.positional else \
            kw.get("dest") or (long or flags)[0].lstrip("-").replace("-", "_")
        self.default: Any = kw.get("default", False if self.action == "store_true" else None)
        self.type: Any = kw.get("type")
        self.choices: Any = kw.get("choices")
        self.required: bool = self.positional or bool(kw.get("required"))


class Declared:
    """What ``register`` declared on one parser (the recorder it is handed)."""

    def __init__(self) -> None:
        self.flags: dict[str, Option] = {}
        self.options: list[Option] = []
        self.positionals: list[Option] = []
        self.groups: list[tuple[bool, list[Option]]] = []
        self.defaults: dict[str, Any] = {}
        self.commands: Commands | None = None

    def add_argument(self, *flags: str, **kw: Any) -> Option:
        option = Option(flags, kw)
        if "default" not in kw and option.dest in self.defaults:
            option.default = self.defaults[option.dest]  # argparse: parser-level default
        self.options.append(option)
        if option.positional:
            self.positionals.append(option)
        else:
            for f in flags:
                self.flags[f] = option
        return option

    def add_mutually_exclusive_group(self, required: bool = False) -> Group:
        group = Group(self)
        self.groups.append((required, group.members))
        return group

    def set_defaults(self, **kw: Any) -> None:
        self.defaults.update(kw)
        for option in self.options:  # argparse: they replace those of existing options
            if option.dest in kw:
                option.default = kw[option.dest]

    def add_subparsers(self, *, dest: str, required: bool = False, **_: Any) -> Commands:
        self.commands = Commands(dest)
        return self.commands


class Group:
    """A mutually exclusive group: its options, noted on the parser too."""

    def __init__(self, parser: Declared) -> None:
        self.parser = parser
        self.members: list[Option] = []

    def add_argument(self, *flags: str, **kw: Any) -> Option:
        option = self.parser.add_argument(*flags, **kw)
        self.members.append(option)
        return option


class Commands:
    """``add_subparsers()``: the sub-command parsers declared."""

    def __init__(self, dest: str) -> None:
        self.dest = dest
        self.parsers: dict[str, Declared] = {}

    def add_parser(self, name: str, **_: Any) -> Declared:
        self.parsers[name] = parser = Declared()
        return parser


def _read(parser: Declared, words: list[str], ns: SimpleNamespace, *, stop: bool) -> int:
    """Set *ns* from the options in *words*; with *stop*, end at the first non-option word
    and return its position."""
    seen: set[int] = set()
    for declared in parser.options:
        if declared.action != "version" and not hasattr(ns, declared.dest):
            setattr(ns, declared.dest, declared.default)
    for dest, value in parser.defaults.items():
        if not hasattr(ns, dest):
            setattr(ns, dest, value)
    i, positionals = 0, iter(parser.positionals)
    while i < len(words):
        word, inline = words[i], None
        if not word.startswith("-") and stop:
            break
        option: Option | None
        if not stop and (word == "-" or not word.startswith("-")):
            option = next(positionals, None)
            if option is None:
                raise Unsupported
            seen.add(id(option))
            i += 1
            _store(option, word, ns)
            continue
        option = parser.flags.get(word)
        if option is None and word.startswith("--") and "=" in word:
            word, _, inline = word.partition("=")
            option = parser.flags.get(word)
        if option is None or option.action == "version":
            raise Unsupported
        seen.add(id(option))
        i += 1
        if option.action == "store_true":
            if inline is not None:
                raise Unsupported
            setattr(ns, option.dest, True)
            continue
        if inline is not None:
            if inline == "--":  # argparse removes it, leaving an empty list
                raise Unsupported
            value = inline
        elif i < len(words) and (not words[i].startswith("-") or words[i] == "-"):
            value, i = words[i], i + 1
        else:
            raise Unsupported
        _store(option, value, ns)
    for declared in parser.options:
        if id(declared) in seen:
            continue
        if declared.required:
            raise Unsupported
        if declared.type is not None and isinstance(declared.default, str) \
                and getattr(ns, declared.dest) is declared.default:
            setattr(ns, declared.dest, declared.type(declared.default))
    for required, members in parser.groups:
        given = sum(id(m) in seen for m in members)
        if given > 1 or (required and not given):
            raise Unsupported
    return i


def _store(option: Option, value: str, ns: SimpleNamespace) -> None:
    """Set *option* to *value* in *ns*, typed and checked as argparse does."""
    typed: Any = value if option.type is None else option.type(value)
    if option.choices is not None and typed not in option.choices:
        raise Unsupported
    if option.action == "append":
        typed = [*(getattr(ns, option.dest) or []), typed]
    setattr(ns, option.dest, typed)


def _command(commands: Commands, words: list[str], ns: SimpleNamespace) -> None:
    """The sub-command ``words[0]`` and what follows it, read into *ns* as argparse's
    sub-parsers action does: its name, then its parser's values set over *ns*."""
    parser = commands.parsers.get(words[0]) if words else None
    if parser is None:
        raise Unsupported
    setattr(ns, commands.dest, words[0])
    sub = SimpleNamespace()
    at = _read(parser, words[1:], sub, stop=parser.commands is not None)
    if parser.commands is not None:
        _command(parser.commands, words[1 + at:], sub)
    for key, value in vars(sub).items():
        setattr(ns, key, value)


def parse(argv: list[str], declare: Any, register: Any) -> Any:
    """The namespace argparse would give for *argv*, or None when argparse must decide.

    *declare(parser)* declares the global options and returns ``add_subparsers()``;
    *register(commands, name)* declares the sub-command *name* on it.
    """
    top = Declared()
    try:
        commands = declare(top)
        ns = SimpleNamespace()
        at = _read(top, argv, ns, stop=True)
        if at == len(argv):
            return None
        register(commands, argv[at])
        _command(commands, argv[at:], ns)
    except Exception:  # anything unusual is argparse's to handle, and to report
        return None
    return ns
