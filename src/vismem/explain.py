"""Showing a decision: a terminal table, and a visual sheet of neighbour thumbnails."""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from PIL import Image, ImageDraw, ImageFont

from .decide import Decision
from .errors import ItemNotFoundError
from .store.base import printable, printable_message

if TYPE_CHECKING:
    from rich.table import Table


def decision_table(decision: Decision) -> Table:
    """Neighbours of one decision: rank, id, label, distance, weight, share, source."""
    from rich.table import Table
    from rich.text import Text

    if decision.abstained:
        title = (f"{decision.path or 'query'} -> abstained: unlike the memory "
                 f"(score {decision.ood_score:.3f} > threshold {decision.threshold:.3f})")
    else:
        title = f"{decision.path or 'query'} -> {decision.label} ({decision.confidence:.0%})"
    voted, k = decision.k_used, decision.vote.k
    capped = f" ({voted} voted: the memory holds no more that can)" if voted < k else ""
    notes = [f"vote {decision.vote.vote}, k={k}{capped}"]
    if decision.prototypes:
        nearest = list(decision.prototypes.items())[:3]
        notes.append("prototype distance " + ", ".join(f"{printable(c)} {d:.3f}" for c, d in nearest))
    notes += decision.interventions
    if decision.counterfactual is not None:
        notes.append("what would change this: " + decision.counterfactual.sentence())
    # Text, not str: labels, paths and sources are shown as given, whatever console prints
    # the table (Rich reads a str as markup: "cats [old]" would lose "[old]")
    table = Table(title=Text(printable(title)), title_justify="left",
                  caption=Text("\n".join(map(printable_message, notes))), caption_justify="left")
    for column in ("#", "id", "label", "distance", "weight", "share", "source"):
        table.add_column(column, justify="right" if column in ("#", "id") else "left")
    for rank, n in enumerate(decision.neighbors):
        table.add_row(
            str(rank), str(n.id), Text(printable(n.label), style="bold" if n.label == decision.label else ""),
            f"{n.distance:.4f}", f"{n.weight:.4f}", f"{n.contribution:.1%}", Text(printable(n.source)),
        )
    return table


def explanation_sheet(
    decision: Decision, thumbnail: Callable[[int], bytes | None], query: Image.Image | None = None,
    tile: int = 128,
) -> Image.Image:
    """A PNG-ready sheet: the query (a blank tile for a vector query: `query` None), then
    each neighbour's stored thumbnail (`thumbnail(id)`, e.g. `Memory.thumbnail`; a tile that
    says "no thumbnail stored" for None) with its vote; below them, what would change the
    decision when it carries a counterfactual."""
    font, drawable = _font()
    blank = Image.new("RGB", (tile, tile), (220, 220, 220))  # a vector has no picture to show
    tiles: list[tuple[Image.Image, list[str]]] = []
    q = blank
    if query is not None:
        q = query.convert("RGB")
        q.thumbnail((tile, tile))
    answer = ["abstained", "unlike the memory"] if decision.abstained else \
        [f"-> {drawable(printable(decision.label))}", f"{decision.confidence:.0%}"]
    tiles.append((q, ["query" if query is not None else "query (vector)", *answer]))
    for n in decision.neighbors:
        try:
            jpeg = thumbnail(n.id)
        except ItemNotFoundError:  # removed since it voted: a blank tile, as for a vector
            jpeg = None
        thumb = _no_picture(tile, font) if jpeg is None else Image.open(io.BytesIO(jpeg)).convert("RGB")
        tiles.append((thumb, [f"#{n.id} {drawable(printable(n.label))}", f"d={n.distance:.3f}", f"w={n.weight:.3f}"]))
    columns = min(6, max(1, len(tiles)))
    rows = (len(tiles) + columns - 1) // columns
    cell_w, cell_h = tile + 8, tile + 48
    footer = [] if decision.counterfactual is None else _wrapped(
        "what would change this: " + drawable(printable_message(decision.counterfactual.sentence())), font,
        columns * cell_w - 8)
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h + 13 * len(footer) + (8 if footer else 0)), "white")
    draw = ImageDraw.Draw(sheet)
    for position, (thumb, lines) in enumerate(tiles):
        x, y = (position % columns) * cell_w + 4, (position // columns) * cell_h + 4
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        for line_no, line in enumerate(lines):  # a long label would run into the next tile
            draw.text((x, y + tile + 2 + 13 * line_no), _fitted(line, font, tile), fill="black", font=font)
    for line_no, line in enumerate(footer):  # (a word wider than the sheet is cut too)
        draw.text((4, rows * cell_h + 4 + 13 * line_no), _fitted(line, font, columns * cell_w - 8), fill="black",
                  font=font)
    return sheet


@functools.lru_cache(maxsize=1)
def _font() -> tuple[ImageFont.ImageFont | ImageFont.FreeTypeFont, Callable[[str], str]]:
    """The sheet's font, and what makes a text drawable in it. Pillow's own default font
    has Latin letters only: a label in Cyrillic, Greek, Arabic or Hebrew came out as a row
    of empty boxes. DejaVu Sans (shipped with matplotlib, a dependency) draws those; a
    character it has no glyph for either (Chinese, Japanese) is written as its escape,
    \\u732b, which names it, where a box named nothing (the table and --json give the text)."""
    spec = importlib.util.find_spec("matplotlib")  # found, not imported: that takes a while
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    try:
        if not folders:
            raise OSError("matplotlib is not installed")
        from fontTools.ttLib import TTFont

        path = Path(folders[0]) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        covered = frozenset(TTFont(path, lazy=True).getBestCmap())
        font = ImageFont.truetype(str(path), 10)
    except (ImportError, OSError, ValueError):  # Pillow's own, as before
        return ImageFont.load_default(), lambda text: text

    def drawable(text: str) -> str:
        return "".join(c if ord(c) in covered or c.isspace() else
                       (f"\\u{ord(c):04x}" if ord(c) < 0x10000 else f"\\U{ord(c):08x}") for c in text)

    return font, drawable


def _no_picture(tile: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> Image.Image:
    """The blank tile of a neighbour with no stored thumbnail, saying so (a sheet read
    later, away from the terminal's note, tells it from a grey picture)."""
    blank = Image.new("RGB", (tile, tile), (220, 220, 220))
    draw = ImageDraw.Draw(blank)
    for line_no, line in enumerate(("no thumbnail", "stored")):
        text = _fitted(line, font, tile - 8)
        draw.text(((tile - font.getlength(text)) / 2, tile / 2 - 13 + 13 * line_no), text, fill=(90, 90, 90),
                  font=font)
    return blank


def _wrapped(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> list[str]:
    """`text` in lines no wider than `width` pixels in `font`, broken between words."""
    lines: list[str] = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def _fitted(text: str, font: ImageFont.ImageFont | ImageFont.FreeTypeFont, width: int) -> str:
    """`text`, or its longest beginning that fits `width` pixels with an ellipsis after it."""
    if font.getlength(text) <= width:
        return text
    low, high = 0, len(text)  # the most characters that fit with the ellipsis: a binary search
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle] + "…") <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + "…"
