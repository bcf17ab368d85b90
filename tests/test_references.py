"""Every reference to a repository document resolves: the file, the cited section, the anchor.

Docstrings, comments and documents cite "docs/science.md section 4", "docs/theory.md sections 1
and 5", ``benchmarks/RESULTS.md`` or link ``[text](science.md#4-layer-wise-sensitivities)``. The
tests below find every such reference in the source, the tests, the benchmarks, the examples, the
README, the changelog and docs/, and check that

- the cited file exists inside the repository (a prose reference may be written relative to the
  citing file's folder or to the repository root; a markdown link only relative to its file),
- every cited section number N is a heading ``## N.`` of that file,
- every link anchor ``#slug`` is the GitHub anchor of one of its headings,
- a section cited without a file name inside docs/ ("see section 5") exists in the same document,
- documents cite other documents' sections through links, so a reader can follow them,
- nothing points at documents outside the repository (a sibling checkout, a shared folder).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
THIS_FILE = Path(__file__).resolve()  # its own docstrings and patterns would cite themselves

SCANNED_FOLDERS = ("src", "tests", "benchmarks", "examples")
SCANNED_ROOT_FILES = ("README.md", "CHANGELOG.md")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".txt", ".c", ".h", ".toml", ".cfg"}

# Between the words of a reference wrapped over lines: spaces, line breaks, comment markers.
GAP = r"[\s#]+"
NUMBER = r"\d+(?:-\d+)?"  # a section, or a range of them ("sections 8-9")
NUMBERS = rf"{NUMBER}(?:(?:{GAP})?,(?:{GAP})?{NUMBER}|(?:,)?{GAP}(?:and|or){GAP}{NUMBER})*"
# A document path: an optional leading "/", "./" or "../" and folders, then NAME.md.
DOC_PATH = r"(?:\.{0,2}/)?(?:[\w.-]+/)*[\w-]+\.md"
DOC_REFERENCE = re.compile(
    rf"(?<![\w/.:-])(?P<path>{DOC_PATH})(?![\w-])"
    rf"(?:{GAP}sections?{GAP}(?P<numbers>{NUMBERS}))?"
)
LINK = re.compile(r"\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
SECTION_ONLY = re.compile(rf"\bsections?{GAP}(?P<numbers>{NUMBERS})")
CODE_SPAN = re.compile(r"`[^`\n]*`")
URL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
# Documents that are not part of the repository (written so that this file does not match them).
OUTSIDE = re.compile(r"\.\./shared\b|\bshared[/]docs\b|/work[/]shared\b")
HEADING = re.compile(r"^(#{1,6})\s+(?P<title>.+?)\s*#*\s*$", re.MULTILINE)
NUMBERED_HEADING = re.compile(r"^##\s+(?P<number>\d+)\.", re.MULTILINE)


@dataclass(frozen=True)
class Reference:
    """One citation of a document: where it is and what it points at."""

    source: Path
    line: int
    path: str
    sections: tuple[int, ...] = ()
    anchor: str | None = None
    link: bool = False

    def where(self) -> str:
        """``file:line`` of the citation, relative to the repository."""
        return f"{self.source.relative_to(ROOT)}:{self.line}"


def scanned_files() -> list[Path]:
    """Every text file whose references are checked."""
    files = [ROOT / name for name in SCANNED_ROOT_FILES if (ROOT / name).is_file()]
    files += sorted((ROOT / "docs").glob("*.md"))
    for folder in SCANNED_FOLDERS:
        files += sorted(
            path
            for path in (ROOT / folder).rglob("*")
            if path.is_file()
            and path.suffix in TEXT_SUFFIXES
            and "__pycache__" not in path.parts
            and not any(part.startswith(".") for part in path.relative_to(ROOT).parts)
        )
    return [path for path in files if path.resolve() != THIS_FILE]


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _numbers(text: str | None) -> tuple[int, ...]:
    """The section numbers of ``"6, 8 and 9"`` or ``"8-9"``, ranges expanded."""
    out: list[int] = []
    for first, last in re.findall(r"(\d+)(?:-(\d+))?", text or ""):
        out += range(int(first), int(last or first) + 1)
    return tuple(out)


def references(path: Path) -> Iterator[Reference]:
    """The document references of one file: prose citations and markdown links."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".md":
        for match in LINK.finditer(text):
            target = match["target"]
            if URL.match(target) or target.startswith("<"):
                continue
            file_part, _, anchor = target.partition("#")
            if file_part and not file_part.endswith(".md"):
                continue  # a link to another kind of file: its existence is checked below
            yield Reference(
                path, _line(text, match.start()), file_part or path.name, (), anchor or None, True
            )
    for match in DOC_REFERENCE.finditer(text):
        yield Reference(path, _line(text, match.start()), match["path"], _numbers(match["numbers"]))


def resolve(reference: Reference) -> Path | None:
    """The cited file, or None when it exists nowhere (inside or outside the repository).

    A link resolves against its file's folder (as a markdown renderer does); a prose citation
    against the citing file's folder or, failing that, the repository root.
    """
    bases = [reference.source.parent] if reference.link else [reference.source.parent, ROOT]
    for base in bases:
        candidate = (base / reference.path).resolve()
        if candidate.is_file():
            return candidate
    return None


@cache
def headings(path: Path) -> tuple[tuple[int, ...], frozenset[str]]:
    """The numbers of the ``## N.`` headings of a document and the anchors of all its headings."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)  # no code blocks
    numbers = tuple(int(m["number"]) for m in NUMBERED_HEADING.finditer(text))
    return numbers, frozenset(github_anchor(m["title"]) for m in HEADING.finditer(text))


def github_anchor(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens.

    >>> github_anchor("2. Random smooth deformations (the max-entropy ensemble)")
    '2-random-smooth-deformations-the-max-entropy-ensemble'
    """
    title = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", title.strip().lower())
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def inside_repository(path: Path) -> bool:
    """Whether ``path`` (resolved) lies in this repository."""
    return path.is_relative_to(ROOT)


ALL_REFERENCES = [ref for path in scanned_files() for ref in references(path)]
DOCS = sorted((ROOT / "docs").glob("*.md"))


def test_the_scan_finds_the_citations_the_code_is_known_to_make() -> None:
    """Guards the patterns: a regex that matched nothing would make every test below pass."""
    cited = {(ref.source.name, ref.path, ref.sections) for ref in ALL_REFERENCES}
    assert ("theory.py", "docs/science.md", (7,)) in cited
    assert ("presets.py", "docs/science.md", (6, 8, 9)) in cited
    assert ("README.md", "docs/science.md", ()) in cited
    assert len({ref.source for ref in ALL_REFERENCES}) > 20
    assert any(ref.link and ref.anchor for ref in ALL_REFERENCES)


def test_every_cited_document_exists_in_the_repository() -> None:
    missing = [
        f"{ref.where()}: {ref.path}"
        for ref in ALL_REFERENCES
        if (found := resolve(ref)) is None or not inside_repository(found)
    ]
    assert not missing, "references to documents that are not in the repository:\n" + "\n".join(
        missing
    )


def test_every_cited_section_is_a_numbered_heading_of_its_document() -> None:
    wrong = []
    for ref in ALL_REFERENCES:
        target = resolve(ref)
        if target is None or not ref.sections:
            continue
        numbers, _ = headings(target)
        wrong += [
            f"{ref.where()}: {ref.path} section {n} (its sections: {list(numbers)})"
            for n in ref.sections
            if n not in numbers
        ]
    assert not wrong, "citations of sections that do not exist:\n" + "\n".join(wrong)


def test_every_link_anchor_is_a_heading_of_its_document() -> None:
    wrong = []
    for ref in ALL_REFERENCES:
        target = resolve(ref)
        if target is None or ref.anchor is None:
            continue
        if ref.anchor not in headings(target)[1]:
            wrong.append(f"{ref.where()}: {ref.path}#{ref.anchor}")
    assert not wrong, "links to anchors that no heading has:\n" + "\n".join(wrong)


def test_every_link_in_the_documents_resolves() -> None:
    """Links to any file (an image, a script, a folder), relative to the linking document."""
    broken = []
    for path in [ROOT / "README.md", *DOCS]:
        text = path.read_text(encoding="utf-8")
        for match in LINK.finditer(text):
            target = match["target"].partition("#")[0]
            if not target or URL.match(target):
                continue
            found = (path.parent / target).resolve()
            if not found.exists() or not inside_repository(found):
                broken.append(f"{path.relative_to(ROOT)}:{_line(text, match.start())}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("document", DOCS, ids=lambda p: p.name)
def test_a_section_cited_without_a_file_is_one_of_the_document_itself(document: Path) -> None:
    text = CODE_SPAN.sub(lambda m: " " * len(m.group()), document.read_text(encoding="utf-8"))
    cited_elsewhere = [m.span() for m in DOC_REFERENCE.finditer(text) if m["numbers"]]
    cited_elsewhere += [m.span() for m in LINK.finditer(text)]
    numbers, _ = headings(document)
    wrong = [
        f"{document.name}:{_line(text, m.start())}: section {n}"
        for m in SECTION_ONLY.finditer(text)
        if not any(start <= m.start() < end for start, end in cited_elsewhere)
        for n in _numbers(m["numbers"])
        if n not in numbers
    ]
    assert not wrong, "sections cited without a file that this document does not have:\n" + (
        "\n".join(wrong)
    )


@pytest.mark.parametrize("document", DOCS, ids=lambda p: p.name)
def test_documents_cite_other_documents_sections_through_links(document: Path) -> None:
    """In docs/, "science.md section 3" is a link ([science.md section 3](science.md#...)), so
    it can be followed; a citation in code spans (an example of the docstring style) is exempt."""
    text = CODE_SPAN.sub(lambda m: " " * len(m.group()), document.read_text(encoding="utf-8"))
    links = [m.span() for m in LINK.finditer(text)]
    bare = [
        f"{document.name}:{_line(text, m.start())}: {' '.join(m.group().split())}"
        for m in DOC_REFERENCE.finditer(text)
        if m["numbers"]
        and (ROOT / "docs" / Path(m["path"]).name).resolve() != document.resolve()
        and not any(start <= m.start() < end for start, end in links)
    ]
    assert not bare, "citations of another document's section that are not links:\n" + "\n".join(
        bare
    )


def test_nothing_cites_a_document_outside_the_repository() -> None:
    outside = []
    for path in scanned_files():
        text = path.read_text(encoding="utf-8")
        outside += [
            f"{path.relative_to(ROOT)}:{_line(text, m.start())}: {m.group()}"
            for m in OUTSIDE.finditer(text)
        ]
    for ref in ALL_REFERENCES:
        found = resolve(ref)
        if ref.path.startswith("/") or (found is not None and not inside_repository(found)):
            outside.append(f"{ref.where()}: {ref.path}")
    assert not outside, "references to documents outside the repository:\n" + "\n".join(outside)


@pytest.mark.parametrize(
    ("text", "path", "sections"),
    [
        ("see docs/science.md section 4.", "docs/science.md", (4,)),
        ("(docs/science.md sections 6, 8 and 9)", "docs/science.md", (6, 8, 9)),
        ("docs/science.md section 1 and 7", "docs/science.md", (1, 7)),
        ("# docs/science.md\n    # section 2, the field", "docs/science.md", (2,)),
        ("docs/theory.md section 5 or 6", "docs/theory.md", (5, 6)),
        ("(docs/science.md sections 7-9)", "docs/science.md", (7, 8, 9)),
        ("benchmarks/RESULTS.md holds it", "benchmarks/RESULTS.md", ()),
        ("/elsewhere/docs/x.md section 2", "/elsewhere/docs/x.md", (2,)),
    ],
)
def test_the_citation_pattern_reads_files_and_sections(
    text: str, path: str, sections: tuple[int, ...]
) -> None:
    match = DOC_REFERENCE.search(text)
    assert match is not None
    assert (match["path"], _numbers(match["numbers"])) == (path, sections)


@pytest.mark.parametrize("text", ["hashlib.md5(data)", "https://example.org/README.md"])
def test_the_citation_pattern_ignores_what_is_not_a_repository_document(text: str) -> None:
    assert DOC_REFERENCE.search(text) is None
