"""The integration map drawn as SVG, with no drawing library.

Systems stand in up to three columns: entry points (webhooks, schedules,
people), then event topics and flows, then the connections reached. The
first column is packed; each later system sits level with the systems it
is linked to, pushed down only as far as needed to keep boxes apart.

A link leaves its source along a short stub that carries the flow names,
written once per source however many systems the flows go on to reach;
then it curves to its target's left edge. A link that skips the middle
column passes it between two boxes; a link within a column bends out to
the right of it, and one back to an earlier column leaves to the left.
Text widths are estimated from character counts, so no font is measured.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

from lobflows.docs import integration_map as maps

FONT_SIZE_PX = 12
CHAR_WIDTH_PX = 7.2  # a 12px sans-serif character, rounded up so text fits
LABEL_CHAR_WIDTH_PX = 6.4  # an 11px label or legend character
BOX_HEIGHT_PX = 32
PITCH_PX = 60  # from one box's top to the next one's in a packed column
TEXT_PADDING_PX = 12
MARGIN_PX = 24
TOP_PX = 104  # title, legend and column headings sit above the systems
CURVE_PX = 110  # room between a stub's end and the next column
LANE_SPREAD_PX = 7  # links sharing a gap of the middle column, apart
LABEL_SPREAD_PX = 17  # stubs of one source with different labels, apart
ORDERING_SWEEPS = 4

COLUMN_OF_KIND = {
    "webhook": 0,
    "schedule": 0,
    "manual": 0,
    "event": 1,
    "flow": 1,
    "connection": 2,
    "none": 2,
}
COLUMN_TITLES = ("Entry points", "Events and flows", "Systems reached")
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

Point = tuple[float, float]


@dataclass
class _Box:
    system: maps.System
    column: int
    x: float = 0.0
    y: float = 0.0
    width: float = 0.0

    @property
    def middle(self) -> float:
        return self.y + BOX_HEIGHT_PX / 2

    @property
    def right(self) -> float:
        return self.x + self.width


@dataclass(frozen=True)
class _Stub:
    """The labelled start that the links of one source with one label share."""

    start: Point
    end: Point
    text: str

    @property
    def middle(self) -> Point:
        return (self.start[0] + self.end[0]) / 2, self.start[1]


@dataclass
class _Drawing:
    boxes: dict[str, _Box]
    columns: list[list[maps.System]]
    stub_px: float
    # (source, side) to the distinct labels of its links, side 1 right, -1 left
    slots: dict[tuple[str, int], list[str]]
    stubs: dict[tuple[str, int, str], _Stub] = field(default_factory=dict)
    lanes: dict[tuple[int, int], int] = field(default_factory=dict)
    reach: float = 0.0  # right end of the bends drawn so far


def render(landscape: maps.IntegrationMap, *, title: str = "Integration map") -> str:
    """The map as a standalone SVG document."""
    columns = _ordered_columns(landscape)
    neighbours = _neighbours(landscape)
    stub_px = _stub_length(landscape)
    boxes = _place(columns, neighbours, stub_px + CURVE_PX)
    drawing = _Drawing(boxes, columns, stub_px, _slots(landscape, boxes))
    paths = [(link, _path(link, drawing)) for link in landscape.links]

    stub_edges = [
        stub.middle[0] + _label_width(stub.text) / 2 for stub in drawing.stubs.values()
    ]
    ends = [box.right for box in boxes.values()] + stub_edges + [drawing.reach]
    right = max(ends)
    width = max(right + 60, _legend_width()) + MARGIN_PX
    bottom = max((box.y + BOX_HEIGHT_PX for box in boxes.values()), default=TOP_PX)
    height = bottom + MARGIN_PX

    parts = [
        _header(width, height, title, landscape),
        _legend(),
        *_headings(drawing),
        '<g class="links" fill="none" stroke="#78909c" stroke-width="1.4">',
        *(_link(link, path) for link, path in paths),
        "</g>",
        f'<g class="systems" font-size="{FONT_SIZE_PX}">',
        *(_system(box) for box in boxes.values()),
        "</g>",
        f'<g class="labels" font-size="{FONT_SIZE_PX - 1}">',
        *(_label(stub) for stub in drawing.stubs.values()),
        "</g>",
        "</svg>",
    ]
    return "\n".join(parts) + "\n"


def xml_text(value: str) -> str:
    """Text safe inside an element or a double-quoted attribute."""
    return escape(_NOT_XML.sub("", value), {'"': "&quot;"})


# -- layout -----------------------------------------------------------------


def _ordered_columns(landscape: maps.IntegrationMap) -> list[list[maps.System]]:
    """Systems by column (empty columns dropped), ordered to keep links level."""
    used = sorted({COLUMN_OF_KIND[s.kind] for s in landscape.systems})
    columns = [
        [s for s in landscape.systems if COLUMN_OF_KIND[s.kind] == column]
        for column in used
    ]
    neighbours = _neighbours(landscape)
    for _ in range(ORDERING_SWEEPS):
        for column in columns:
            rank = {s.key: float(i) for c in columns for i, s in enumerate(c)}
            column.sort(key=lambda s: _mean(neighbours[s.key], rank, rank[s.key]))
    return columns


def _neighbours(landscape: maps.IntegrationMap) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {s.key: [] for s in landscape.systems}
    for link in landscape.links:
        found[link.source.key].append(link.target.key)
        found[link.target.key].append(link.source.key)
    return found


def _mean(keys: list[str], place: dict[str, float], fallback: float) -> float:
    known = [place[key] for key in keys if key in place]
    return sum(known) / len(known) if known else fallback


def _place(
    columns: list[list[maps.System]], neighbours: dict[str, list[str]], gap: float
) -> dict[str, _Box]:
    """Boxes with their places: the first column packed, the others level with links."""
    boxes: dict[str, _Box] = {}
    x = float(MARGIN_PX)
    for index, column in enumerate(columns):
        width = max(_text_width(s.label) + 2 * TEXT_PADDING_PX for s in column)
        tops = {key: box.y for key, box in boxes.items()}
        wanted = [
            _mean(neighbours[s.key], tops, TOP_PX + row * PITCH_PX)
            if index
            else TOP_PX + row * PITCH_PX
            for row, s in enumerate(column)
        ]
        order = sorted(range(len(column)), key=lambda row: wanted[row])
        heights = _apart([wanted[row] for row in order])
        for row, y in zip(order, heights, strict=True):
            boxes[column[row].key] = _Box(column[row], index, x=x, y=y, width=width)
        x += width + gap
    return boxes


def _apart(wanted: list[float]) -> list[float]:
    """Heights as close to those wanted as boxes a pitch apart allow, order kept."""
    placed: list[float] = []
    for y in wanted:
        floor = placed[-1] + PITCH_PX if placed else TOP_PX
        placed.append(max(y, floor))
    return placed


def _slots(
    landscape: maps.IntegrationMap, boxes: dict[str, _Box]
) -> dict[tuple[str, int], list[str]]:
    slots: dict[tuple[str, int], list[str]] = {}
    for link in landscape.links:
        side = _side(boxes[link.source.key], boxes[link.target.key])
        labels = slots.setdefault((link.source.key, side), [])
        if link.label not in labels:
            labels.append(link.label)
    return slots


def _side(source: _Box, target: _Box) -> int:
    return -1 if target.column < source.column else 1


def _stub_length(landscape: maps.IntegrationMap) -> float:
    longest = max((_label_width(link.label) for link in landscape.links), default=0)
    return min(max(longest + 16, 90.0), 320.0)


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH_PX


def _label_width(text: str) -> float:
    return len(text) * LABEL_CHAR_WIDTH_PX + 10


# -- links ------------------------------------------------------------------


def _path(link: maps.Link, drawing: _Drawing) -> str:
    source = drawing.boxes[link.source.key]
    target = drawing.boxes[link.target.key]
    stub = _stub(link, source, target, drawing)
    path = f"M {_xy(stub.start)} L {_xy(stub.end)}"
    if target.column == source.column:
        return path + _bend(stub.end, target, drawing)
    if target.column < source.column:
        return path + _curve(stub.end, (target.right, target.middle))

    points = [stub.end]
    for column in range(source.column + 1, target.column):
        lane = _lane(column, stub.end[1], target.middle, drawing)
        left, right = _column_span(column, drawing)
        points += [(left - 10, lane), (right + 10, lane)]
    points.append((target.x, target.middle))
    for i in range(1, len(points)):
        through_column = i % 2 == 0 and i < len(points) - 1
        if through_column:
            path += f" L {_xy(points[i])}"
        else:
            path += _curve(points[i - 1], points[i])
    return path


def _stub(link: maps.Link, source: _Box, target: _Box, drawing: _Drawing) -> _Stub:
    side = _side(source, target)
    key = (link.source.key, side, link.label)
    if key not in drawing.stubs:
        labels = drawing.slots[(link.source.key, side)]
        index = labels.index(link.label)
        y = source.middle + (index - (len(labels) - 1) / 2) * LABEL_SPREAD_PX
        x = source.right if side > 0 else source.x
        end = (x + side * drawing.stub_px, y)
        drawing.stubs[key] = _Stub((x, y), end, link.label)
    return drawing.stubs[key]


def _curve(start: Point, end: Point) -> str:
    """A curve leaving and arriving level, so it meets boxes square on."""
    middle = (start[0] + end[0]) / 2
    return f" C {middle:.1f} {start[1]:.1f} {middle:.1f} {end[1]:.1f} {_xy(end)}"


def _bend(start: Point, target: _Box, drawing: _Drawing) -> str:
    """From a stub, out to the right and back to a box of the same column."""
    far = start[0] + 30 + abs(target.middle - start[1]) / 4
    drawing.reach = max(drawing.reach, far)
    end = (target.right, target.middle)
    return f" C {far:.1f} {start[1]:.1f} {far:.1f} {end[1]:.1f} {_xy(end)}"


def _lane(column: int, start_y: float, end_y: float, drawing: _Drawing) -> float:
    """A height at which a link crosses a column between its boxes."""
    middles = sorted(drawing.boxes[s.key].middle for s in drawing.columns[column])
    wanted = (start_y + end_y) / 2
    above, below = middles[0] - PITCH_PX / 2, middles[-1] + PITCH_PX / 2
    if wanted <= above or wanted >= below:
        return wanted
    gaps = [(a + b) / 2 for a, b in zip(middles, middles[1:], strict=False)]
    gaps += [above, below]
    lane = min(range(len(gaps)), key=lambda i: abs(gaps[i] - wanted))
    used = drawing.lanes.get((column, lane), 0)
    drawing.lanes[(column, lane)] = used + 1
    # Around the gap's middle: 0, +7, -7, +14, -14 ...
    offset = ((used + 1) // 2) * LANE_SPREAD_PX * (1 if used % 2 else -1)
    return gaps[lane] + offset


def _column_span(column: int, drawing: _Drawing) -> tuple[float, float]:
    first = drawing.boxes[drawing.columns[column][0].key]
    return first.x, first.right


def _xy(point: Point) -> str:
    return f"{point[0]:.1f} {point[1]:.1f}"


# -- drawing ----------------------------------------------------------------


def _header(
    width: float, height: float, title: str, landscape: maps.IntegrationMap
) -> str:
    description = (
        f"{len(landscape.systems)} systems and {len(landscape.links)} links; "
        "each link is labelled with the flows that carry data along it."
    )
    return "\n".join(
        [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
            f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
            'font-family="Helvetica, Arial, sans-serif" role="img" '
            'aria-labelledby="map-title map-description">',
            f'<title id="map-title">{xml_text(title)}</title>',
            f'<desc id="map-description">{xml_text(description)}</desc>',
            "<defs>",
            '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" '
            'markerWidth="7" markerHeight="7" orient="auto">',
            '<path d="M 0 0 L 10 5 L 0 10 z" fill="#78909c"/>',
            "</marker>",
            "</defs>",
            f'<rect width="{width:.0f}" height="{height:.0f}" fill="#ffffff"/>',
            f'<text x="{MARGIN_PX}" y="{MARGIN_PX + 8}" font-size="18" '
            f'font-weight="bold">{xml_text(title)}</text>',
        ]
    )


_LEGEND = (
    ("webhook", "webhook"),
    ("schedule", "schedule"),
    ("manual", "by hand"),
    ("event", "event topic"),
    ("flow", "flow run by a flow"),
    ("connection", "connection"),
)
_LEGEND_SWATCH_PX = 24  # swatch and spacing around each legend text


def _legend_width() -> float:
    texts = sum(_label_width(text) for _, text in _LEGEND)
    return MARGIN_PX + texts + _LEGEND_SWATCH_PX * len(_LEGEND)


def _legend() -> str:
    parts = [f'<g class="legend" font-size="{FONT_SIZE_PX - 1}">']
    x, y = float(MARGIN_PX), MARGIN_PX + 26
    for kind, text in _LEGEND:
        fill, stroke = maps.KIND_COLOURS[kind]
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="14" height="12" rx="3" '
            f'fill="{fill}" stroke="{stroke}"/>'
        )
        parts.append(f'<text x="{x + 19:.1f}" y="{y + 10:.1f}">{xml_text(text)}</text>')
        x += _label_width(text) + _LEGEND_SWATCH_PX
    parts.append("</g>")
    return "\n".join(parts)


def _headings(drawing: _Drawing) -> list[str]:
    headings = []
    for column in drawing.columns:
        first = drawing.boxes[column[0].key]
        title = COLUMN_TITLES[COLUMN_OF_KIND[first.system.kind]]
        headings.append(
            f'<text x="{first.x + first.width / 2:.1f}" y="{TOP_PX - 22}" '
            f'text-anchor="middle" font-size="13" font-weight="bold" '
            f'fill="#37474f">{xml_text(title)}</text>'
        )
    return headings


def _system(box: _Box) -> str:
    fill, stroke = maps.KIND_COLOURS[box.system.kind]
    radius = BOX_HEIGHT_PX / 2 if box.system.kind != "connection" else 4
    text_y = box.middle + FONT_SIZE_PX / 3
    return (
        f'<g class="system {box.system.kind}">'
        f"<title>{xml_text(box.system.label)}</title>"
        f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.width:.1f}" '
        f'height="{BOX_HEIGHT_PX}" rx="{radius:.0f}" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="1.5"/>'
        f'<text x="{box.x + box.width / 2:.1f}" y="{text_y:.1f}" '
        f'text-anchor="middle">{xml_text(box.system.label)}</text></g>'
    )


def _link(link: maps.Link, path: str) -> str:
    about = f"{link.source.label} → {link.target.label}: {link.label}"
    return (
        f'<g class="link"><title>{xml_text(about)}</title>'
        f'<path d="{path}" marker-end="url(#arrow)"/></g>'
    )


def _label(stub: _Stub) -> str:
    x, y = stub.middle
    width = _label_width(stub.text)
    return (
        f'<rect x="{x - width / 2:.1f}" y="{y - 8:.1f}" width="{width:.1f}" '
        f'height="16" rx="3" fill="#ffffff" stroke="#cfd8dc"/>'
        f'<text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle" '
        f'fill="#263238">{xml_text(stub.text)}</text>'
    )
