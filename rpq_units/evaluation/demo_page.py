"""A static demo page in the style of the RPQ paper's page (arXiv 2504.04721): audio players
for a handful of test utterances (Original / copy-synthesis / continuous / each discretizer),
the feature-dimension correlation heatmap (the paper's Fig. 6), the WER table and the
resynthesis table.

Everything the page shows is copied next to it (``audio/<system>/<uttid>.wav``,
``figs/*.png``) and linked by relative paths: the page reads offline from the file system,
with no script and no network.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rpq_units.files import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

# Laid out for a 1280-px screen without sideways scrolling: long command lines wrap, a table
# wider than the page scrolls inside its own box, figures shrink to the page.
_CSS = """
body { font-family: sans-serif; max-width: 1400px; margin: 2em auto; padding: 0 1em; }
.wide { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #bbb; padding: 4px 8px; text-align: center; }
th { background: #eee; }
td.utt { text-align: left; font-size: 85%; min-width: 180px; max-width: 260px; }
audio { width: 150px; }
pre { white-space: pre-wrap; overflow-wrap: anywhere; font-size: 85%; background: #f6f6f6;
      padding: 0.5em; }
img { max-width: 100%; height: auto; }
figure { display: inline-block; margin: 0 1em 1em 0; max-width: 100%; }
figcaption { max-width: 640px; font-size: 90%; color: #333; }
"""


def _inline(text: str) -> str:
    """Escape, then markdown ``**bold**`` and ``code``."""
    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", t)


def markdown_to_html(md: str) -> str:
    """The markdown this project writes (headings, pipe tables, fenced code, "- " lists,
    paragraphs) as HTML."""
    out: list[str] = []
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            block = lines[i + 1 : j]
            pre = "<pre>" + html.escape("\n".join(block)) + "</pre>"
            # a long block (the commands behind a table) folded, so the tables stay in view
            out.append(pre if len(block) <= 4 else
                       f"<details><summary>{len(block)} lines</summary>{pre}</details>")
            i = j + 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                    rows.append(cells)
                i += 1
            if rows:
                head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0])
                body = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:]
                )
                out.append(f'<div class="wide"><table><tr>{head}</tr>{body}</table></div>')
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:])}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
            continue
        m = re.match(r"(#+)\s+(.*)", line)
        if m:
            level = min(6, len(m.group(1)) + 2)
            out.append(f"<h{level}>{_inline(m.group(2))}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def _layer(report: dict) -> str:
    """``layer 21``, or ``its one output`` for an upstream with a single hidden state."""
    if report.get("num_layers") == 1:
        return "its one output"
    return f"layer {report['layer']}"


def _heatmap_caption(png: Path) -> str:
    """What a ``dim_correlation.png`` shows, from the ``analysis.json`` beside it where there
    is one (its frames and the features they came from)."""
    text = ("Pearson correlation between every pair of feature dimensions (red: positive, "
            "blue: negative; the diagonal is 1)")
    try:
        a = json.loads((png.parent / "analysis.json").read_text())
        text += f"; {int(a['frames']):,} frames of <code>{html.escape(str(a['feats_dir']))}</code>"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return text + "."


def write_page(
    *,
    resynth_dir: str | os.PathLike,
    page_dir: str | os.PathLike,
    num_utts: int = 5,
    results_md: str | os.PathLike | None = None,
    heatmaps: Sequence[str | os.PathLike] = (),
    title: str = "Speech resynthesized from discrete units",
) -> list[str]:
    """Write ``<page_dir>/index.html`` from a :func:`rpq_units.evaluation.resynth.resynth` output dir;
    returns the relative paths of every file the page links (all copied under ``page_dir``)."""
    from rpq_units.evaluation.resynth import format_table, label

    src = Path(resynth_dir)
    page = Path(page_dir)
    report: dict[str, Any] = json.loads((src / "metrics.json").read_text())
    systems: list[str] = report["systems"]
    utts: list[str] = report["utterances"][: max(1, num_utts)]
    linked: list[str] = []
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        "<p>Units &rarr; discretizer <code>decode</code> &rarr; features &rarr; waveform "
        f"({html.escape(report['synthesis'])}); upstream "
        f"<code>{html.escape(str(report['upstream']))}</code>, {_layer(report)}, "
        f"{report['frame_rate']:g} frames/s. Copy-synthesis inverts the utterance's own "
        "features (the upper bound of the inversion); Continuous uses the features the "
        "discretizers see.</p>",
        "<h2>Samples</h2>",
        '<div class="wide"><table><tr><th>Utterance</th>'
        + "".join(f"<th>{html.escape(label(s))}</th>" for s in systems)
        + "</tr>",
    ]
    for u in utts:
        text = report.get("text", {}).get(u, "")
        cells = [f'<td class="utt"><b>{html.escape(u)}</b><br>{html.escape(text)}</td>']
        for s in systems:
            rel = f"audio/{s}/{u}.wav"
            _copy(src / "wav" / s / f"{u}.wav", page / rel)
            linked.append(rel)
            cells.append(
                f'<td><audio controls preload="metadata"><source src="{rel}" '
                'type="audio/wav"></audio></td>'
            )
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table></div>")
    parts += ["<h2>Resynthesis (averages over the test utterances)</h2>",
              markdown_to_html(format_table(report))]
    if results_md is not None and Path(results_md).is_file():
        parts += ["<h2>Discrete-unit ASR</h2>", markdown_to_html(Path(results_md).read_text())]
    elif results_md is not None:
        parts += ["<h2>Discrete-unit ASR</h2>",
                  f"<p>No results table yet ({html.escape(str(results_md))}).</p>"]
    if heatmaps:
        parts.append("<h2>Correlation between feature dimensions (the paper's Fig. 6)</h2>")
        for h in heatmaps:
            h = Path(h)
            rel = f"figs/{h.parent.parent.name}_{h.name}" if h.parent.name == "analysis" else f"figs/{h.name}"
            _copy(h, page / rel)
            linked.append(rel)
            parts.append(
                f'<figure><img src="{rel}" alt="{html.escape(h.name)}">'
                f"<figcaption>{_heatmap_caption(h)}</figcaption></figure>"
            )
    parts.append("</body></html>")
    write_text_atomic(page / "index.html", "\n".join(parts) + "\n")
    logger.info("demo page: %s (%d linked files)", page / "index.html", len(linked))
    return linked
