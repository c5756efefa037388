"""Markup to plain text, and the text rules of the fetched recipes. Pure functions: text in, text out.

Every ``*_to_text`` returns ``clean_text`` of its result: lines right-stripped, runs of blank
lines cut to one, the whole stripped; paragraphs are separated by one blank line.

* ``html_to_text``: the standard library's ``html.parser``; the content of ``SKIP_TAGS`` (scripts,
  styles, the head, navigation) and of elements whose class or id is in ``SKIP_CLASSES`` (DocBook
  navigation headers, mdBook sidebars and menu bars) is dropped; block elements end a line or a
  paragraph; whitespace is collapsed except inside ``<pre>``; entities are decoded.
* ``rst_to_text``: reStructuredText: title adornments, comments, directive lines and their
  options dropped (the argument of object directives such as ``.. function:: len(s)`` kept);
  roles, links, literals and emphasis reduced to their text.
* ``pod_to_text``: Perl's POD: commands reduced to their text, formatting codes (``B<>``,
  ``C<< >>``, ``L<text|target>``, ``E<gt>``, ...) to their text, ``=begin``/``=end`` blocks and
  code after ``=cut`` dropped.
* ``roff_to_text``: man pages (man(7) macros, as Pod::Man writes them): requests and macro
  definitions dropped, headings and font macros reduced to their text, escapes decoded.
* ``osis_to_text``: one verse of OSIS XML (SWORD modules): notes dropped, ``x-p`` paragraph
  markers and titles kept as paragraph breaks.
* ``brown_to_text``: the Brown corpus, form C (``word/tag`` tokens, one sentence per line, a tab
  starting a paragraph) to running text.
* ``wordnet_to_text``: WordNet ``data.*`` lines to ``lemma, lemma: gloss`` lines.
* ``looks_english``: a function-word test (English against French, German, Italian, Spanish,
  Latin), for dropping translations and non-text.
* ``split_document``: a long text cut at paragraph (then line, then word) boundaries into
  documents of at most ``max_chars`` characters; ``verbatim=True`` (source code) keeps a text
  that fits unchanged and the indentation of each piece's first line.
* ``normalise``: the form whose hash identifies exact duplicates (NFC, whitespace runs as one
  space, stripped).
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

# ---------------------------------------------------------------------------------------------
# shared


def clean_text(text: str) -> str:
    """Lines right-stripped, at most one blank line in a row, no leading/trailing blank lines."""
    text = "\n".join(line.rstrip() for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def normalise(text: str) -> str:
    """The duplicate-detection form of a document: NFC, every whitespace run one space, stripped."""
    return " ".join(unicodedata.normalize("NFC", text).split())


def split_document(text: str, max_chars: int, *, verbatim: bool = False) -> list[str]:
    """``text`` as documents of at most ``max_chars`` characters, cut between paragraphs (blank
    lines) where possible, else between lines, else between words, else anywhere. Pieces are
    packed greedily in order; empty pieces are dropped, the others stripped. ``verbatim`` (code):
    a text that fits is returned unchanged, and a piece loses only its leading blank lines and
    trailing whitespace, so that the indentation of its first line is kept."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if verbatim and len(text) <= max_chars:
        return [text] if text.strip() else []
    pieces = _pack(text, max_chars, ("\n\n", "\n", " "))
    trim = (lambda p: re.sub(r"\A(?:[ \t]*\n)+", "", p.rstrip())) if verbatim else str.strip
    return [trim(p) for p in pieces if p.strip()]


def _pack(text: str, max_chars: int, seps: tuple[str, ...]) -> list[str]:
    if len(text) <= max_chars:
        return [text]
    if not seps:
        return [text[i:i + max_chars] for i in range(0, len(text), max_chars)]
    sep, out, cur = seps[0], [], ""
    for unit in text.split(sep):
        for piece in _pack(unit, max_chars, seps[1:]):
            if cur and len(cur) + len(sep) + len(piece) > max_chars:
                out.append(cur)
                cur = piece
            else:
                cur = f"{cur}{sep}{piece}" if cur else piece
    if cur:
        out.append(cur)
    return out


# words that are frequent in running text of one language and rare in the others
ENGLISH_WORDS = frozenset(
    "the of and to is that for it with as was this be are by or from which you not have can will an on at "
    "if they he his but all we there their has would what when been one more so its no these may must should "
    "into only also than then each other any how who them were our your".split())
OTHER_WORDS = frozenset(
    "il di che la le per non una della del sono degli nella alla questo "        # Italian
    "der die und das ist nicht mit von zu den dem ein eine auch sich werden "    # German
    "les et est pour dans une du que des sur pas sont avec cette "               # French
    "el los las por con para es se del lo como pero su más "                     # Spanish
    "et est cum sed quae qui nec ad atque enim quod sunt ab ex "                 # Latin
    "de en".split())


def looks_english(text: str, min_share: float = 0.04) -> bool:
    """True when at least ``min_share`` of the words are English function words, English ones
    outnumber those of the other languages listed in ``OTHER_WORDS`` two to one, and at least
    90% of the letters are ASCII. A text of fewer than 20 words is judged by the letters alone."""
    letters = sum(map(str.isalpha, text))
    ascii_letters = sum(map(str.isalpha, text.encode("ascii", "ignore").decode("ascii")))
    if not letters or ascii_letters < 0.9 * letters:
        return False
    words = re.findall(r"[a-zà-ÿ]+", text.lower())
    if len(words) < 20:
        return True
    english = sum(w in ENGLISH_WORDS for w in words)
    other = sum(w in OTHER_WORDS for w in words)
    return english >= min_share * len(words) and english >= 2 * other


# ---------------------------------------------------------------------------------------------
# HTML

SKIP_TAGS = frozenset({"script", "style", "head", "nav", "noscript", "svg", "template", "button", "select"})
SKIP_CLASSES = frozenset({"navheader", "navfooter", "sidebar", "menu-bar", "headerlink"})
VOID_TAGS = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
                       "source", "track", "wbr"})
PARAGRAPH_TAGS = frozenset({"p", "div", "pre", "table", "ul", "ol", "dl", "blockquote", "section", "article",
                            "header", "footer", "main", "aside", "figure", "h1", "h2", "h3", "h4", "h5", "h6",
                            "title", "hr"})
LINE_TAGS = frozenset({"br", "li", "dt", "dd", "tr", "caption", "figcaption"})


class _HTMLText(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip: str | None = None  # the tag whose content is being dropped
        self.skip_depth = 0
        self.pre = 0

    def _break(self, tag: str) -> None:
        want = "\n\n" if tag in PARAGRAPH_TAGS else "\n" if tag in LINE_TAGS else ""
        tail = "".join(self.parts[-2:])
        if want and not tail.endswith(want):
            self.parts.append("\n" if tail.endswith("\n") else want)

    def handle_starttag(self, tag, attrs):
        if self.skip is not None:
            self.skip_depth += tag == self.skip
            return
        attr = dict(attrs)
        marks = set((attr.get("class") or "").split()) | {attr.get("id") or ""}
        if (tag in SKIP_TAGS or marks & SKIP_CLASSES) and tag not in VOID_TAGS:
            self.skip, self.skip_depth = tag, 1
            return
        self.pre += tag == "pre"
        self._break(tag)
        if tag in ("td", "th"):
            self.parts.append(" ")

    def handle_endtag(self, tag):
        if self.skip is not None:
            if tag == self.skip:
                self.skip_depth -= 1
                if self.skip_depth == 0:
                    self.skip = None
            return
        if tag == "pre":
            self.pre = max(0, self.pre - 1)
        self._break(tag)

    def handle_data(self, data):
        if self.skip is not None:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
            if not self.parts or self.parts[-1].endswith("\n"):
                data = data.lstrip()
        self.parts.append(data)


# the parser drops these too; cutting them out first saves most of its time on pages that carry
# a whole table of contents in a <nav> (mdBook: 86 MB of rust-doc HTML become 12 MB)
_HTML_PRESTRIP = re.compile(r"<(script|style|nav|svg|noscript|template)\b.*?</\1\s*>", re.S | re.I)


def html_to_text(markup: str) -> str:
    """The visible text of an HTML page (module docstring)."""
    parser = _HTMLText()
    parser.feed(_HTML_PRESTRIP.sub("", markup))
    parser.close()
    return clean_text("".join(parser.parts))


# ---------------------------------------------------------------------------------------------
# reStructuredText

_RST_ADORNMENT = re.compile(r"^\s*([!-/:-@\[-`{-~])\1{2,}\s*$")
_RST_EXPLICIT = re.compile(r"^(\s*)\.\.(?:\s+(.*))?$")
_RST_DIRECTIVE = re.compile(r"^(?:\|[^|]+\|\s+)?([\w:.+-]+)::(?:\s+(.*))?$")
_RST_OBJECT = re.compile(r"(function|method|class|attribute|data|exception|decorator|describe|macro|type|member|"
                         r"struct|union|enum|var|option|envvar)$")
_RST_OPTION = re.compile(r"^\s+:[\w -]+:")
_RST_DROP_BODY = frozenset({"toctree", "raw", "index", "tabularcolumns", "kernel-feat", "kernel-abi"})
_RST_INLINE = [
    (re.compile(r"(:[\w:.+-]+:)`([^`]*)`"), lambda m: _rst_role_text(m.group(1), m.group(2))),
    (re.compile(r"`([^`<]*?)\s*<[^`>]*>`__?"), r"\1"),
    (re.compile(r"``(.+?)``"), r"\1"),
    (re.compile(r"`([^`]+)`__?"), r"\1"),
    (re.compile(r"`([^`]+)`"), r"\1"),
    (re.compile(r"\*\*([^*\n]+)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*\\])\*([^*\s][^*\n]*?)\*(?![\w*])"), r"\1"),
    (re.compile(r"\s*\[(?:#\w*|\*|\d+)\]_"), ""),
    (re.compile(r"\|([\w -]+)\|_?"), r"\1"),
]


def _rst_role_text(role: str, inner: str) -> str:
    if role in (":pep:", ":rfc:"):
        return f"{role[1:-1].upper()} {inner}"
    inner = re.sub(r"\s*<[^>]*>$", "", inner).strip() or inner
    if inner.startswith("~"):
        inner = inner[1:].split(".")[-1]
    return inner.lstrip("!")


def rst_to_text(source: str) -> str:
    """The text of a reStructuredText document (module docstring)."""
    out: list[str] = []
    lines = source.replace("\t", "    ").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        explicit = _RST_EXPLICIT.match(line)
        if _RST_ADORNMENT.match(line):
            continue
        if explicit:
            indent = len(explicit.group(1))
            directive = _RST_DIRECTIVE.match(explicit.group(2) or "")
            if directive:
                if directive.group(2) and _RST_OBJECT.search(directive.group(1)):
                    out.append(" " * indent + directive.group(2))
                while i < len(lines) and _RST_OPTION.match(lines[i]):  # :maxdepth: 2 and the like
                    i += 1
                if directive.group(1) in _RST_DROP_BODY:  # file lists, raw HTML: not text
                    while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
                        i += 1
            else:  # a comment, target or footnote: drop it with its indented continuation
                while i < len(lines) and lines[i].strip() and _indent(lines[i]) > indent:
                    i += 1
            continue
        if line.strip() == "::":
            continue
        out.append(re.sub(r"::\s*$", ":", line))
    return clean_text(_rst_inline("\n".join(out)))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _rst_inline(text: str) -> str:
    for pattern, repl in _RST_INLINE:
        text = pattern.sub(repl, text)
    return text


# ---------------------------------------------------------------------------------------------
# POD

_POD_ESCAPES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&", "apos": "'"}
_LT, _GT = "\ue000", "\ue001"  # stand-ins for E<lt> and E<gt> while the codes are being reduced
_POD_DOUBLE = re.compile(r"([A-Z])<{2,}\s+(.*?)\s+>{2,}", re.S)
_POD_SINGLE = re.compile(r"([A-Z])<([^<>]*)>")


def _pod_escape(name: str) -> str:
    if name == "lt":
        return _LT
    if name == "gt":
        return _GT
    if name.isdigit():
        return chr(int(name))
    if name.lower().startswith("0x"):
        return chr(int(name, 16))
    return _POD_ESCAPES.get(name, html.unescape(f"&{name};"))


def _pod_code(code: str, inner: str) -> str:
    if code in "XZ":
        return ""
    if code == "L":
        text, bar, target = inner.partition("|")
        if bar:
            return text
        return re.sub(r'^(.*?)/"?(.+?)"?$', r'"\2" in \1', inner) if "/" in inner and "://" not in inner else inner
    return inner


def pod_inline(text: str) -> str:
    """POD formatting codes reduced to their text (nested codes and ``C<< >>`` included)."""
    text = re.sub(r"E<([^<>]+)>", lambda m: _pod_escape(m.group(1)), text)
    text = _POD_DOUBLE.sub(lambda m: _pod_code(m.group(1), m.group(2)), text)
    while True:
        reduced = _POD_SINGLE.sub(lambda m: _pod_code(m.group(1), m.group(2)), text)
        if reduced == text:
            break
        text = reduced
    return text.replace(_LT, "<").replace(_GT, ">")


def pod_to_text(source: str) -> str:
    """The text of a POD document (module docstring)."""
    out: list[str] = []
    in_pod, skip_until = True, None
    for line in source.split("\n"):
        command = re.match(r"^=(\w+)\s*(.*)$", line)
        if skip_until is not None:
            if command and command.group(1) == "end" and command.group(2).strip() == skip_until:
                skip_until = None
            continue
        if command:
            name, arg = command.group(1), command.group(2).strip()
            in_pod = name != "cut"
            if name == "begin":
                skip_until = arg.split()[0] if arg else ""
            elif name.startswith("head") or name == "item":
                arg = re.sub(r"^(\*|\d+\.?)\s*", "", arg) if name == "item" else arg
                out.append(f"\n{pod_inline(arg)}\n" if arg else "")
            continue
        if in_pod:
            out.append(line if line.startswith((" ", "\t")) else pod_inline(line))
    return clean_text("\n".join(out))


# ---------------------------------------------------------------------------------------------
# roff (man pages)

_ROFF_CHARS = {"em": "\u2014", "en": "\u2013", "bu": "\u2022", "aq": "'", "dq": '"', "lq": "\u201c",
               "rq": "\u201d", "oq": "\u2018", "cq": "\u2019", "co": "\u00a9", "rg": "\u00ae", "hy": "-",
               "mi": "-", "pl": "+", "mu": "\u00d7", "tm": "\u2122", "ga": "`", "ti": "~", "ha": "^",
               "rs": "\\", "Fo": "\u00ab", "Fc": "\u00bb", "de": "\u00b0", "<=": "\u2264", ">=": "\u2265"}
_ROFF_STRINGS = {'L"': '"', 'R"': '"', "C`": "", "C'": "", "PI": "\u03c0", "Tm": "\u2122", "M-": "\u2014"}
_ROFF_ESCAPES = [
    (re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)"), ""),                       # fonts
    (re.compile(r"\\s[+-]?\d"), ""),                                     # point size
    (re.compile(r"\\\*\((..)"), lambda m: _ROFF_STRINGS.get(m.group(1), "")),
    (re.compile(r"\\\*\[([^\]]*)\]"), lambda m: _ROFF_STRINGS.get(m.group(1), "")),
    (re.compile(r"\\\*(.)"), lambda m: _ROFF_STRINGS.get(m.group(1), "")),
    (re.compile(r"\\\((..)"), lambda m: _ROFF_CHARS.get(m.group(1), "")),
    (re.compile(r"\\\[([^\]]*)\]"), lambda m: _ROFF_CHARS.get(m.group(1), "")),
    (re.compile(r"\\[nk](?:\(..|\[[^\]]*\]|.)"), ""),                    # registers, marks
    (re.compile(r"\\[wh]'[^']*'"), ""),
    (re.compile(r"\\[&|^%c:)]"), ""),
    (re.compile(r"\\[ 0~]"), " "),
    (re.compile(r"\\-"), "-"),
    (re.compile(r"\\e"), "\\\\"),
    (re.compile(r"\\(.)"), r"\1"),
]
_ROFF_FONT_MACROS = frozenset({"B", "I", "SM", "SB", "BR", "RB", "IR", "RI", "BI", "IB", "CW", "R"})
_ROFF_BREAKS = frozenset({"PP", "P", "LP", "sp", "Sp", "br", "TP", "HP", "RS", "RE", "Vb", "Ve", "nf", "fi", "bp"})


def roff_inline(text: str) -> str:
    for pattern, repl in _ROFF_ESCAPES:
        text = pattern.sub(repl, text)
    return text


def _roff_args(rest: str) -> list[str]:
    return [a[1:-1] if a.startswith('"') and a.endswith('"') and len(a) > 1 else a
            for a in re.findall(r'"[^"]*"|\S+', rest)]


def roff_to_text(source: str) -> str:
    """The text of a man page (module docstring)."""
    out: list[str] = []
    skip_block = False
    for line in source.split("\n"):
        if skip_block:
            skip_block = line.strip() != ".."
            continue
        if not line.startswith((".", "'")):
            out.append(roff_inline(line))
            continue
        match = re.match(r"^[.']\s*(\S*)\s*(.*)$", line)
        name, rest = match.group(1), match.group(2)
        if name in ("if", "ie") and rest.startswith("n "):  # the nroff branch of a condition
            out.append(roff_to_text(rest[2:].lstrip()))
        elif name in ("de", "de1", "ig", "am", "ds1"):
            skip_block = name != "ds1"
        elif name in ("SH", "SS"):
            out.append(f"\n{roff_inline(' '.join(_roff_args(rest)))}\n")
        elif name in _ROFF_FONT_MACROS:
            joiner = " " if name in ("B", "I", "SM", "SB", "CW", "R") else ""
            out.append(roff_inline(joiner.join(_roff_args(rest))))
        elif name == "IP":
            args = _roff_args(rest)
            tag = roff_inline(args[0]).strip() if args else ""
            out.append("\n" + (tag if tag not in ("", "\u2022", "*", "-", "o") else ""))
        elif name in _ROFF_BREAKS:
            out.append("")
    return clean_text("\n".join(out))


# ---------------------------------------------------------------------------------------------
# OSIS (SWORD modules), the Brown corpus, WordNet


def osis_to_text(verse: str) -> str:
    """The text of one OSIS verse: notes dropped, paragraph markers (``x-p``) and titles as blank
    lines, spaces collapsed. Not stripped: a paragraph break at either end survives joining verses."""
    verse = re.sub(r"<note\b.*?</note>", " ", verse, flags=re.S)
    verse = re.sub(r"<div\b[^>]*\btype=\"x-p\"[^>]*/>", "\n\n", verse)
    verse = re.sub(r"<title\b[^>]*>(.*?)</title>", r"\n\n\1\n\n", verse, flags=re.S)
    verse = re.sub(r"</?(?:l|lg|p)\b[^>]*>", "\n", verse)
    verse = html.unescape(re.sub(r"<[^>]*>", "", verse))
    verse = re.sub(r" +([,.;:!?\u2019\u201d)])", r"\1", re.sub(r"[ \t]+", " ", verse))
    return re.sub(r" *\n *", "\n", verse)


_BROWN_CLOSE = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "''", "'"})
_BROWN_OPEN = frozenset({"(", "[", "``"})


def _brown_sentence(tokens: list[str]) -> str:
    out, glue = [], True
    for token in tokens:
        word = token.rsplit("/", 1)[0] if "/" in token[1:] else token
        text = '"' if word in ("``", "''") else word
        if out and not glue and word not in _BROWN_CLOSE:
            out.append(" ")
        out.append(text)
        glue = word in _BROWN_OPEN
    return "".join(out)


def brown_to_text(raw: str) -> str:
    """Running text of one Brown corpus file, form C (module docstring)."""
    paragraphs: list[list[str]] = []
    for line in raw.split("\n"):
        if not line.strip():
            continue
        sentence = _brown_sentence(line.split())
        if line.startswith("\t") or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].append(sentence)
    return clean_text("\n\n".join(" ".join(p) for p in paragraphs))


def wordnet_to_text(raw: str) -> str:
    """``lemma, lemma: gloss`` for each synset line of a WordNet ``data.*`` file (the licence
    header, whose lines start with two spaces, is left out)."""
    out = []
    for line in raw.split("\n"):
        head, bar, gloss = line.partition(" | ")
        fields = head.split()
        if line.startswith("  ") or not bar or len(fields) < 5:
            continue
        n_words = int(fields[3], 16)
        lemmas = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in fields[4:4 + 2 * n_words:2]]
        out.append(f"{', '.join(lemmas)}: {gloss.strip()}")
    return clean_text("\n".join(out))
