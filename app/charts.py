"""Server-rendered charts: matplotlib figures written as accessible SVG (inline) or PNG (download).

Every chart in Casebook (dashboards, the case-series analysis, the export bundle's
analysis.html) goes through here so they share one look: the Okabe-Ito colour-blind-safe
palette, a title, axis labels with units, and a text alternative. Figures are built with
matplotlib's object-oriented API (`Figure`, never `pyplot`), which keeps no global state and
so is safe in a threaded or multi-process server.
"""

from __future__ import annotations

import io
import re
from html import escape

from matplotlib.axes import Axes
from matplotlib.figure import Figure

#: Okabe & Ito (2008), distinguishable with every common colour-vision deficiency.
PALETTE: tuple[str, ...] = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",  # black
)
#: Line styles cycled beside the colours, so series differ in more than colour alone.
LINESTYLES: tuple[str, ...] = ("-", "--", "-.", ":")
#: Past this many marks, a data layer goes into the SVG as an embedded picture instead of a vector
#: shape per mark: 100,000 marks make tens of megabytes of SVG that a browser draws slowly and
#: nobody reads mark by mark. Titles, axes and legend stay vector text either way.
VECTOR_MARKS = 5000
#: Resolution of such an embedded picture, and of a PNG download.
DPI = 150


def new_figure(title: str, xlabel: str, ylabel: str, *, width: float = 6.4,
               height: float = 3.6) -> tuple[Figure, Axes]:
    """A figure with one set of axes, titled and labelled (put units in the labels)."""
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_prop_cycle(color=list(PALETTE[: len(LINESTYLES)]), linestyle=list(LINESTYLES))
    axes.spines[["top", "right"]].set_visible(False)
    return figure, axes


def series_style(index: int) -> dict[str, str]:
    """Colour and line style of the index-th series, for plots that set them explicitly."""
    return {"color": PALETTE[index % len(PALETTE)], "linestyle": LINESTYLES[index % len(LINESTYLES)]}


def rasterized(marks: int) -> bool:
    """Whether a layer of `marks` marks is drawn as a picture in the SVG (see VECTOR_MARKS)."""
    return marks > VECTOR_MARKS


def to_svg(figure: Figure, alt: str) -> str:
    """The figure as an inline `<svg>` element with role="img", a <title> and a <desc>.

    Screen readers announce the title (the chart's own) and the description (`alt`: what the
    chart shows, in words and numbers), as an <img alt> would.
    """
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Date": None}, dpi=DPI)
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML declaration and DOCTYPE: the SVG goes inline
    title = escape(figure.axes[0].get_title() if figure.axes else alt)
    svg = _STYLE_ELEMENT.sub("", svg)
    svg = _STYLE_ATTRIBUTE.sub(_as_presentation_attributes, svg)
    end = svg.index(">") + 1  # the root element's opening tag
    head = _SIZE_ATTRIBUTE.sub("", svg[: end - 1])
    head += (f' class="cb-chart" stroke-linejoin="round" stroke-linecap="butt" role="img"'
             f' aria-label="{escape(alt, quote=True)}">')
    return head + f"<title>{title}</title><desc>{escape(alt)}</desc>" + svg[end:]


#: matplotlib styles its SVG with a <style> element and style="" attributes, which a strict
#: Content-Security-Policy (style-src 'self') blocks in an inline SVG. The same properties as
#: SVG presentation attributes (fill="...") are not styles and are allowed; the <style>
#: element's two defaults move onto the root element, whence they inherit.
_STYLE_ELEMENT = re.compile(r"<style[^>]*>.*?</style>", re.S)
_STYLE_ATTRIBUTE = re.compile(r'style="([^"]*)"')
#: Without a fixed width and height the viewBox lets the chart shrink to a phone's width.
_SIZE_ATTRIBUTE = re.compile(r'\s(?:width|height)="[^"]*"')


def _as_presentation_attributes(match: re.Match[str]) -> str:
    declarations = (part.split(":", 1) for part in match.group(1).split(";") if ":" in part)
    return " ".join(f'{name.strip()}="{value.strip()}"' for name, value in declarations)


def to_png(figure: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes, for downloads and documents that cannot hold SVG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None})
    return buffer.getvalue()
