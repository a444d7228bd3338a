"""The report's neutral form (titled sections of blocks) rendered to Markdown and to one HTML page."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Section:
    """One titled part of the report: a list of blocks rendered to Markdown and to HTML.

    Blocks: ``("p", text)``, ``("pre", text)``, ``("list", [items])``,
    ``("fields", [(name, text), ...])`` (named lines; addresses in them become links in HTML),
    ``("table", header, rows)``, ``("img", file_name, alt)``.
    """

    title: str
    blocks: list[tuple] = field(default_factory=list)


def to_markdown(title: str, parts: Sequence[Section]) -> str:
    out = [f"# {title}", ""]
    for s in parts:
        out += [f"## {s.title}", ""]
        for kind, *args in s.blocks:
            if kind == "p":
                out += [args[0], ""]
            elif kind == "pre":
                out += ["```", args[0].rstrip("\n"), "```", ""]
            elif kind == "list":
                out += [f"{i}. {item}" for i, item in enumerate(args[0], 1)] + [""]
            elif kind == "fields":
                out += [f"- **{name}:** {text}" for name, text in args[0]] + [""]
            elif kind == "table":
                header, rows = args
                out.append("| " + " | ".join(map(str, header)) + " |")
                out.append("|" + "|".join("---" for _ in header) + "|")
                out += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
                out.append("")
            elif kind == "img":
                out += [f"![{args[1]}]({args[0]})", ""]
    return "\n".join(out)


_CSS = ("body{font-family:sans-serif;max-width:75em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0;display:block;overflow-x:auto}"
        "td,th{border:1px solid #bbb;"
        "padding:.2em .6em;text-align:right;white-space:nowrap}th{background:#eee}pre{background:#f6f6f6;"
        "padding:.6em;overflow-x:auto}img{max-width:100%}"
        "dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{font-weight:bold}"
        "dd{margin:0;overflow-wrap:anywhere}")
_ADDRESS = re.compile(r"https?://[^\s<>\"']+")


def _linked(text: str) -> str:
    """Escaped text with its http(s) addresses as links and its `code spans` as code."""
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append(f"<code>{html.escape(part)}</code>")
            continue
        end = 0
        for m in _ADDRESS.finditer(part):
            url = m.group().rstrip(".,;)")
            out += [html.escape(part[end:m.start()]),
                    f'<a href="{html.escape(url)}">{html.escape(url)}</a>']
            end = m.start() + len(url)
        out.append(html.escape(part[end:]))
    return "".join(out)


def to_html(title: str, parts: Sequence[Section], images: Mapping[str, bytes]) -> str:
    """One self-contained page: images inlined as ``data:`` URIs, tables as HTML tables."""
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{e(title)}</title><style>{_CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for s in parts:
        out.append(f"<h2>{e(s.title)}</h2>")
        for kind, *args in s.blocks:
            if kind == "p":
                out.append(f"<p>{e(args[0])}</p>")
            elif kind == "pre":
                out.append(f"<pre>{e(args[0])}</pre>")
            elif kind == "list":
                out.append("<ol>" + "".join(f"<li>{e(i)}</li>" for i in args[0]) + "</ol>")
            elif kind == "fields":
                out.append("<dl>" + "".join(f"<dt>{e(name)}</dt><dd>{_linked(text)}</dd>"
                                            for name, text in args[0]) + "</dl>")
            elif kind == "table":
                header, rows = args
                head = "".join(f"<th>{e(str(h))}</th>" for h in header)
                body = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>"
                               for row in rows)
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "img":
                data = base64.b64encode(images[args[0]]).decode("ascii")
                out.append(f'<img src="data:image/png;base64,{data}" alt="{e(args[1])}">')
    out.append("</body></html>")
    return "\n".join(out)
