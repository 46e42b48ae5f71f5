"""The repository explains itself: every reference in code, tests and benchmarks points inside it.

* no path outside the repository (the team's shared folder, absolute paths of a machine, the
  reference files and design notes that only the team has);
* every ``docs/<page>.md`` mentioned exists;
* every section cited exists as a heading of its page: ``SPEC §4.1`` and a bare ``§4.1`` mean
  ``docs/rules.md`` (see docs/README.md), ``docs/providers.md §1.4`` means that page; the citation
  context is the last page (or ``SPEC``) named earlier on the same line, and ``RFC <n> §…`` is
  someone else's section.

* every module, function or class named in backticks (``appt_pipeline.pipelines.accounts``,
  :func:`appt_pipeline.store.write_path.apply_observations`) can be imported or looked up, so a
  moved module or a renamed function cannot leave stale references behind.

File reads and imports only; no database.
"""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

#: Text files of the code whose references are checked.
CODE_DIRS = ("appt_pipeline", "appt_pipeline_tests", "bench", "deploy")
CODE_SUFFIXES = {".py", ".md", ".lua", ".sql", ".yaml", ".yml", ".toml", ".txt", ".cfg", ".ini", ".service",
                 ".conf", ".example", ".lock"}
#: Files at the top of the repository that are also checked for paths outside it.
TOP_FILES = ("README.md", "dagster.yaml", "workspace.yaml", "pyproject.toml")

#: (pattern, why) — references to things a user of the repository does not have.
OUTSIDE = [
    (re.compile(r"\.\./shared"), "the team's shared folder"),
    (re.compile(r"shared/fixtures"), "the team's shared fixtures"),
    (re.compile(r"""["']shared["']\s*/\s*["']fixtures["']"""), "the team's shared fixtures (a path built from parts)"),
    (re.compile(r"/work/"), "an absolute path of a machine"),
    (re.compile(r"peer-behaviour"), "the team's study of the original system (use docs/original-system.md)"),
    (re.compile(r"provider-apis"), "the team's provider notes (use docs/providers.md)"),
    (re.compile(r"dagster-notes|dagster-feasibility"), "the team's Dagster notes (use docs/operations.md)"),
    (re.compile(r"sync-peers"), "the team's notes on peer projects"),
    (re.compile(r"\b(?:SPEC|DESIGN)\.md\b"), "the team's spec / design files (use docs/rules.md)"),
]

DOC_PATH = re.compile(r"docs/([A-Za-z0-9_.-]+\.md)")
#: Tokens that set the citation context, and the section citations themselves.
TOKEN = re.compile(
    r"(?P<doc>docs/[A-Za-z0-9_-]+\.md)|(?P<spec>\bSPEC\b)|(?P<rfc>\bRFC\s*\d+)|§\s?(?P<sec>\d+(?:\.\d+)*)"
)
HEADING_SECTION = re.compile(r"§(\d+(?:\.\d+)*)")
#: A dotted name of ours in backticks (reST roles or literals), optionally with the ``~`` of a short link.
DOTTED_NAME = re.compile(r"`~?(appt_pipeline(?:_tests)?(?:\.[A-Za-z_]\w*)+|bench(?:\.[A-Za-z_]\w*)+)`")


def _code_files() -> list[Path]:
    files = []
    for d in CODE_DIRS:
        for p in sorted((ROOT / d).rglob("*")):
            if p.is_file() and (p.suffix in CODE_SUFFIXES or p.name == "Dockerfile") and "__pycache__" not in p.parts:
                files.append(p)
    return files


def _sections(page: Path) -> set[str]:
    """Section numbers that appear in the page's headings (``## §4 …``, ``### §4.1 …``)."""
    found: set[str] = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            found.update(HEADING_SECTION.findall(line))
    return found


def _citations(text: str) -> list[tuple[int, str | None, str]]:
    """``(line number, page or None for someone else's document, section)`` for every ``§`` citation."""
    out: list[tuple[int, str | None, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        page: str | None = "rules.md"
        for m in TOKEN.finditer(line):
            if m.group("doc"):
                page = m.group("doc").removeprefix("docs/")
            elif m.group("spec"):
                page = "rules.md"
            elif m.group("rfc"):
                page = None
            else:
                out.append((number, page, m.group("sec")))
    return out


def _rel(p: Path) -> str:
    return p.relative_to(ROOT).as_posix()


THIS_FILE = Path(__file__).resolve()


def test_docs_pages_exist() -> None:
    for name in ("README.md", "rules.md", "providers.md", "original-system.md", "operations.md"):
        assert (DOCS / name).is_file(), name
    # rules.md keeps the numbering code cites: §1 … §12
    assert {str(n) for n in range(1, 13)} <= _sections(DOCS / "rules.md")


def test_nothing_points_outside_the_repository() -> None:
    files = [p for p in _code_files() if p != THIS_FILE]
    files += [ROOT / f for f in TOP_FILES if (ROOT / f).is_file()]
    files += sorted(DOCS.glob("*.md")) + sorted((ROOT / "sql").glob("*.sql"))
    problems = []
    for p in files:
        for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            for pattern, why in OUTSIDE:
                if pattern.search(line):
                    problems.append(f"{_rel(p)}:{number}: {why}: {line.strip()[:120]}")
    assert not problems, "\n".join(problems)


def test_every_docs_page_mentioned_exists() -> None:
    problems = []
    for p in _code_files():
        for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            for name in DOC_PATH.findall(line):
                if not (DOCS / name).is_file():
                    problems.append(f"{_rel(p)}:{number}: docs/{name} does not exist")
    assert not problems, "\n".join(problems)


def test_links_between_docs_pages_resolve() -> None:
    problems = []
    for page in sorted(DOCS.glob("*.md")):
        for target in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if not (page.parent / target).exists():
                problems.append(f"{_rel(page)}: link to {target} does not resolve")
    assert not problems, "\n".join(problems)


def test_every_cited_section_exists() -> None:
    pages = {p.name: _sections(p) for p in DOCS.glob("*.md")}
    problems = []
    for p in _code_files():
        if p == THIS_FILE:
            continue
        for number, page, section in _citations(p.read_text(encoding="utf-8")):
            if page is None:
                continue
            if page not in pages:
                problems.append(f"{_rel(p)}:{number}: §{section} of docs/{page}, which does not exist")
            elif section not in pages[page]:
                problems.append(f"{_rel(p)}:{number}: docs/{page} has no heading §{section}")
    assert not problems, "\n".join(problems)


def _resolves(name: str) -> bool:
    """Whether ``name`` is a module, or an attribute chain below the longest importable module prefix."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is not None and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue
            raise
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_named_modules_and_functions_exist() -> None:
    problems = []
    for p in _code_files():
        for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
            for name in DOTTED_NAME.findall(line):
                if not _resolves(name):
                    problems.append(f"{_rel(p)}:{number}: {name} does not exist")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("rule of SPEC §4.1 and §3", [(1, "rules.md", "4.1"), (1, "rules.md", "3")]),
        ("see docs/providers.md §1.4, §2.5; SPEC §6", [(1, "providers.md", "1.4"), (1, "providers.md", "2.5"),
                                                        (1, "rules.md", "6")]),
        ("Retry-After (RFC 9110 §10.2.3)", [(1, None, "10.2.3")]),
        ("docs/original-system.md §7.2\n§5 again", [(1, "original-system.md", "7.2"), (2, "rules.md", "5")]),
    ],
)
def test_citation_context(line: str, expected: list[tuple[int, str | None, str]]) -> None:
    assert _citations(line) == expected
