"""Generate man pages and shell completion from tpmseal's argparse definitions.

    python tools/cli_docs.py man DIR         # DIR/tpmseal.1, DIR/tpmseal-seal.1, ...
    python tools/cli_docs.py bash FILE       # bash completion (source it, or install it
                                             # as /usr/share/bash-completion/completions/tpmseal)
    python tools/cli_docs.py zsh FILE        # zsh completion (install as _tpmseal in $fpath)

Nothing is written by hand: every command, option, choice and help text comes from
``tpmseal.cli.main.build_parser()``, so the pages cannot drift from ``--help``. The
output is deterministic (no dates), so a rebuild changes a file only when the CLI did.
Standard library only: no runtime dependency is added.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

from tpmseal import __version__
from tpmseal.cli.main import build_parser
from tpmseal.errors import ExitCode, TpmsealError

ENVIRONMENT = [
    ("TPMSEAL_TPM", "the TPM when --tpm is not given (a URI or a tpm2-tools TCTI string)"),
    ("TPM2TOOLS_TCTI", "the TPM when neither --tpm nor TPMSEAL_TPM is set"),
    ("TCTI", "the TPM when none of the above is set; failing all, device:/dev/tpmrm0"),
    ("TPMSEAL_TRUST_FILE", "the trust file when --trust-file is not given "
                           "(default /var/lib/tpmseal/trust.json)"),
    ("TPMSEAL_TIMEOUT", "seconds one TPM exchange may take (default 120)"),
    ("NO_COLOR", "when set, sniff and decode do not colour secrets (--color auto)"),
]

Path_ = tuple[str, ...]


def walk(parser: argparse.ArgumentParser, path: Path_ = ()
         ) -> Iterator[tuple[Path_, argparse.ArgumentParser, str]]:
    """Every (command path, parser, one-line summary), the top level first."""
    yield path, parser, ""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                for p, parsed, summary in walk(sub, (*path, name)):
                    yield p, parsed, summary or helps.get(name, "")


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings]


def subcommands(parser: argparse.ArgumentParser) -> list[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return list(action.choices)
    return []


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def help_text(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if not action.help or action.help == argparse.SUPPRESS:
        return ""
    return parser._get_formatter()._expand_help(action)


# --------------------------------------------------------------------------- man


def _esc(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in ".'" else line for line in text.split("\n"))


def _page_name(path: Path_) -> str:
    return "-".join(("tpmseal", *path))


def _option_head(action: argparse.Action) -> str:
    flags = ", ".join(f"\\fB{_esc(o)}\\fR" for o in action.option_strings)
    if action.nargs == 0:
        return flags
    if action.choices and not action.metavar:  # an explicit metavar wins, as in --help
        value = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        value = str(action.metavar or action.dest.upper())
    return f"{flags} \\fI{_esc(value)}\\fR"


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    return " ".join(usage.split())


def man_page(path: Path_, parser: argparse.ArgumentParser, summary: str,
             commands: list[tuple[Path_, str]]) -> str:
    name = _page_name(path)
    out = [f'.TH {name.upper()} 1 "" "tpmseal {__version__}" "tpmseal manual"',
           ".SH NAME", f"{_esc(name)} \\- {_esc(summary or 'seal secrets into a TPM 2.0')}",
           ".SH SYNOPSIS", _esc(_usage(parser))]
    if parser.description:
        out += [".SH DESCRIPTION", _esc(parser.description)]
    args = positionals(parser)
    if args:
        out.append(".SH ARGUMENTS")
        for a in args:
            out += [".TP", f"\\fI{_esc(str(a.metavar or a.dest))}\\fR", _esc(help_text(parser, a))]
    opts = options(parser)
    if opts:
        out.append(".SH OPTIONS")
        for a in opts:
            out += [".TP", _option_head(a), _esc(help_text(parser, a))]
    subs = [(p, s) for p, s in commands if len(p) == len(path) + 1 and p[:len(path)] == path]
    if subs:
        out.append(".SH COMMANDS")
        for p, s in subs:
            see = f"see \\fB{_esc(_page_name(p))}\\fR(1)"
            out += [".TP", f"\\fB{_esc(p[-1])}\\fR", f"{_esc(s)}; {see}"]
    if not path:
        out += [".SH ENVIRONMENT"]
        for var, what in ENVIRONMENT:
            out += [".TP", f"\\fB{var}\\fR", _esc(what)]
        out += [".SH EXIT STATUS", "Every failure prints one line on standard error: "
                "\\fBtpmseal: error:\\fR \\fIwhat happened\\fR; \\fIwhat to do\\fR."]
        for code, what in [*_exit_codes(), (130, "interrupted")]:
            out += [".TP", f"\\fB{int(code)}\\fR", _esc(what)]
    out += [".SH SEE ALSO",
            ", ".join(f"\\fB{_esc(_page_name(p))}\\fR(1)" for p, _ in commands
                      if p != path and len(p) <= 1) + ", \\fBtpm2-tools\\fR(1), \\fBswtpm\\fR(8)"]
    return "\n".join(out) + "\n"


def _exit_codes() -> list[tuple[int, str]]:
    """Each exit code with the docstrings of the error classes that use it."""
    from tpmseal import errors
    from tpmseal.wire import rc

    found: dict[int, list[str]] = {ExitCode.OK: ["success"],
                                   ExitCode.INTERNAL: ["internal error (a bug: rerun "
                                                       "with --debug and report it)"]}
    for obj in [*vars(errors).values(), *vars(rc).values()]:
        if (isinstance(obj, type) and issubclass(obj, TpmsealError) and obj is not TpmsealError
                and obj.__doc__ and obj.exit_code != ExitCode.INTERNAL):
            doc = " ".join(obj.__doc__.replace("*", "").split())
            if doc not in found.setdefault(obj.exit_code, []):
                found[obj.exit_code].append(doc)
    return [(code, " ".join(found[code])) for code in sorted(found)]


def write_man(directory: Path) -> list[Path]:
    parser = build_parser()
    pages = list(walk(parser))
    commands = [(p, s) for p, _, s in pages if p]
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for path, sub, summary in pages:
        if len(path) > 1 and not options(sub) and not positionals(sub):
            continue
        target = directory / f"{_page_name(path)}.1"
        target.write_text(man_page(path, sub, summary, commands))
        written.append(target)
    return written


# ---------------------------------------------------------------------- completion


def tables() -> dict[str, dict[str, str]]:
    """Per command path ("tpmseal seal"): sub-commands, options, options taking a value,
    and the choices of an option ("tpmseal seal|--profile")."""
    subs, opts, valued, choices = {}, {}, {}, {}
    for path, parser, _ in walk(build_parser()):
        key = " ".join(("tpmseal", *path))
        subs[key] = " ".join(subcommands(parser))
        opts[key] = " ".join(o for a in options(parser) for o in a.option_strings)
        valued[key] = " ".join(o for a in options(parser) if a.nargs != 0
                               for o in a.option_strings)
        for a in options(parser):
            if a.choices and a.nargs != 0:
                for o in a.option_strings:
                    choices[f"{key}|{o}"] = " ".join(str(c) for c in a.choices)
    return {"subs": subs, "opts": opts, "valued": valued, "choices": choices}


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def _assoc(name: str, table: dict[str, str], shell: str) -> str:
    """An associative array literal: ``[key]=value`` for bash, key value pairs for zsh."""
    pairs = (f"[{_quote(k)}]={_quote(v)}" if shell == "bash" else f"{_quote(k)} {_quote(v)}"
             for k, v in table.items())
    return f"{name}=(\n" + "".join(f"    {p}\n" for p in pairs) + ")"


BASH_FUNCTION = r"""
_tpmseal() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local path=tpmseal i w
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        [[ $w == -* ]] && continue
        [[ " ${_tpmseal_valued[$path]} " == *" ${COMP_WORDS[i-1]} "* ]] && continue
        [[ " ${_tpmseal_subs[$path]} " == *" $w "* ]] && path="$path $w"
    done
    if [[ $cur != -* && " ${_tpmseal_valued[$path]} " == *" $prev "* ]]; then
        local choices=${_tpmseal_choices[$path|$prev]}
        if [[ -n $choices ]]; then
            COMPREPLY=($(compgen -W "$choices" -- "$cur"))
        else
            COMPREPLY=($(compgen -f -- "$cur"))
        fi
        return
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_tpmseal_opts[$path]}" -- "$cur"))
    elif [[ -n ${_tpmseal_subs[$path]} ]]; then
        COMPREPLY=($(compgen -W "${_tpmseal_subs[$path]}" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
}
complete -o filenames -F _tpmseal tpmseal
"""

ZSH_FUNCTION = r"""
_tpmseal() {
    local path_=tpmseal cur=${words[CURRENT]} prev=${words[CURRENT-1]} i w
    for (( i = 2; i < CURRENT; i++ )); do
        w=${words[i]}
        [[ $w == -* ]] && continue
        [[ " ${_tpmseal_valued[$path_]} " == *" ${words[i-1]} "* ]] && continue
        [[ " ${_tpmseal_subs[$path_]} " == *" $w "* ]] && path_="$path_ $w"
    done
    if [[ $cur != -* && " ${_tpmseal_valued[$path_]} " == *" $prev "* ]]; then
        local choices=${_tpmseal_choices[$path_|$prev]}
        if [[ -n $choices ]]; then compadd -- ${=choices}; else _files; fi
        return
    fi
    if [[ $cur == -* ]]; then
        compadd -- ${=_tpmseal_opts[$path_]}
    elif [[ -n ${_tpmseal_subs[$path_]} ]]; then
        compadd -- ${=_tpmseal_subs[$path_]}
    else
        _files
    fi
}
if [[ ${funcstack[1]} == _tpmseal ]]; then _tpmseal "$@"; else compdef _tpmseal tpmseal; fi
"""


def completion(shell: str) -> str:
    t = tables()
    declare = "declare -gA" if shell == "bash" else "typeset -gA"
    head = ("# bash completion for tpmseal, generated by tools/cli_docs.py from the argparse "
            "definitions\n" if shell == "bash" else
            "#compdef tpmseal\n# zsh completion for tpmseal, generated by tools/cli_docs.py "
            "from the argparse definitions\n")
    arrays = "\n".join(f"{declare} _tpmseal_{name}\n{_assoc(f'_tpmseal_{name}', table, shell)}"
                       for name, table in t.items())
    return head + arrays + "\n" + (BASH_FUNCTION if shell == "bash" else ZSH_FUNCTION)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("man", "bash", "zsh"):
        sys.stderr.write(__doc__ or "")
        return 2
    kind, target = argv
    if kind == "man":
        for page in write_man(Path(target)):
            print(page)
    else:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(completion(kind))
        print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
