"""The quality report in people's formats: Markdown (per-attribute accuracy, the gate's margins in
attributes, the scorers' confusion tables) and a grid picture of every scored picture with its
prompt and verdicts."""

from __future__ import annotations

import numpy as np

from .confusion import NOT_FOUND, accuracy_by_row, most_confused
from .evaluate import GateResult, QualityReport
from .gate_margin import QUALITY_MARGIN

CONFUSION_TITLES = {"color": "colour (shapes scorer: nearest named hue)",
                    "shape": "shape (shapes scorer: bounding-box fill ratio)",
                    "digit": "digit (digits classifier)"}


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _allowed(check: dict, digits: int = 1) -> str:
    """A class margin in points and verdicts; at 100% or more the class has too few verdicts to fail."""
    if check["margin"] >= 1.0:
        return f"any of {check['count']} (too few to judge)"
    return f"{check['margin']:.{digits}%} = {check['margin_attributes']} of {check['count']}"


def confusion_markdown(attribute: str, matrix: dict[str, dict[str, int]]) -> str:
    """One confusion matrix as a Markdown table: rows what captions named, columns what was read."""
    columns = list(next(iter(matrix.values())))
    rows = accuracy_by_row(matrix)
    lines = [f"| named \\ read | {' | '.join(columns)} | read right |",
             "| --- | " + " | ".join("---:" for _ in columns) + " | ---: |"]
    for named, counts in matrix.items():
        cells = [f"**{counts[c]}**" if c == named else str(counts[c]) for c in columns]
        lines.append(f"| {named} | {' | '.join(cells)} | {_percent(rows[named])} |")
    worst = most_confused(matrix)
    headline = (f"most confused: {worst[0]} read as {worst[1]} ({worst[2]} times)" if worst
                else "every reading right")
    missing = sum(counts.get(NOT_FOUND, 0) for counts in matrix.values())
    if missing:
        headline += f"; no shape found for {missing} of the captions' shapes"
    return f"### Confusion: {CONFUSION_TITLES.get(attribute, attribute)}\n\n" + "\n".join(lines) + f"\n\n{headline}.\n"


def confusion_tables(confusion: dict) -> str:
    return "\n".join(confusion_markdown(attribute, confusion[attribute]) for attribute in sorted(confusion))


def _per_attribute_table(report: QualityReport, gate: GateResult | None) -> list[str]:
    if gate is None:
        lines = ["| attribute | verdicts | right | accuracy |", "| --- | ---: | ---: | ---: |"]
        correct = report.per_attribute_correct()
        for name, accuracy in report.per_attribute.items():
            count = report.per_attribute_count.get(name)
            lines.append(f"| {name} | {count if count is not None else '-'} | "
                         f"{correct.get(name, '-')} | {accuracy:.1%} |")
        return lines
    lines = ["| attribute | verdicts | fp32 torch | artifacts | drop | class margin | class check |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, check in gate.class_checks().items():
        lines.append(f"| {name} | {check['count']} | {check['torch']:.1%} | {check['artifacts']:.1%} | "
                     f"{check['drop']:+.1%} | {_allowed(check)} | "
                     f"{'passed' if check['passed'] else '**FAILED**'} |")
    return lines


def markdown_report(report: QualityReport, gate: GateResult | None = None, margin: float = QUALITY_MARGIN,
                    setting: str | None = None) -> str:
    """The whole report. `gate`: the artifacts' report gated against fp32 torch (`report` is then
    gate.artifacts); without it, the margins a recipe measured against this run would get."""
    lines = [f"# Quality: {report.source}", "",
             f"Fidelity **{report.fidelity:.1%}** over {report.n} pictures"
             + (f" ({setting})" if setting else "") + f", {report.attributes} attribute verdicts.", "",
             "## Per attribute", ""]
    lines += _per_attribute_table(report, gate)
    lines += ["", "## Gate margin", ""]
    if gate is not None:
        summary = gate.as_dict()["gate"]
        lines.append(f"Overall: drop {gate.drop:+.1%} against fp32 torch {gate.reference.fidelity:.1%} "
                     f"(net {round(gate.drop * gate.reference.attributes)} of {gate.reference.attributes} verdicts); "
                     f"margin {gate.margin:.1%} = {summary['margin_attributes']} verdicts: "
                     f"{'passed' if gate.overall_passed else '**FAILED**'}. Per class: "
                     + ("every class within its margin." if not gate.failed_classes
                        else f"**{', '.join(gate.failed_classes)} lost** (beyond the class margin).")
                     + f" Gate: **{'passed' if gate.passed else 'FAILED'}**.")
    else:
        summary = report.margins(margin)
        per_class = ", ".join(f"{name} {_allowed(c)}" for name, c in summary["classes"].items())
        lines.append(f"A recipe gated against this run may lose {margin:.1%} = {summary['margin_attributes']} of "
                     f"{report.attributes} attribute verdicts overall, and per class at most: {per_class}.")
    lines += ["", "## Scorer confusion", "", "Rows: what the caption named; columns: what the scorer read in the "
              "picture (none: no shape found for it).", "", confusion_tables(report.confusion)]
    return "\n".join(lines).rstrip() + "\n"


def text_summary(report: QualityReport, gate: GateResult | None = None, margin: float = QUALITY_MARGIN,
                 setting: str | None = None) -> str:
    """What `md-export quality` prints: fidelity per attribute, the gate (or the margins a recipe
    gated against this run gets), then the scorers' confusion tables."""
    attributes = ", ".join(f"{k} {v:.0%}" for k, v in report.per_attribute.items())
    lines = [f"fidelity {report.fidelity:.1%} over {report.n} pictures ({setting + '; ' if setting else ''}"
             f"{report.attributes} attributes): {attributes}; {report.source}"]
    if gate is not None:
        summary = gate.as_dict()["gate"]
        classes = ", ".join(f"{k} {c['drop']:+.1%} (margin {_allowed(c, 0)})" for k, c in summary["classes"].items())
        lines.append(f"fp32 torch: {gate.reference.fidelity:.1%}; drop {gate.drop:+.1%} (margin {gate.margin:.0%} = "
                     f"{summary['margin_attributes']} of {gate.reference.attributes} attributes): "
                     f"{'passed' if gate.overall_passed else 'FAILED'}; per class: {classes}: "
                     + ("passed" if not gate.failed_classes else "FAILED " + ", ".join(gate.failed_classes)))
    else:
        summary = report.margins(margin)
        lines.append(f"gate margin against this run: {margin:.0%} = {summary['margin_attributes']} of "
                     f"{report.attributes} attributes; per class: "
                     + ", ".join(f"{k} {_allowed(c, 0)}" for k, c in summary["classes"].items()))
    return "\n".join(lines) + "\n\n" + confusion_tables(report.confusion)


# ---- grid picture ---------------------------------------------------------------------------

SCALE = 2  # 64x64 pictures drawn at 128x128
PAD = 4
FRAME = 3
TEXT_LINES = 4  # caption (up to three lines) + verdicts
FONT_SIZE = 10
LINE_HEIGHT = 12
ABBREVIATIONS = {"color": "col", "shape": "shp", "position": "pos", "relation": "rel", "digit": "dig"}
ALL_RIGHT, SOME_RIGHT, NONE_RIGHT = (40, 160, 60), (230, 150, 20), (200, 40, 40)


def _verdict_line(item: dict) -> str:
    parts = [ABBREVIATIONS.get(k, k) + " " + "".join("+" if v else "-" for v in values)
             for k, values in item["verdicts"].items()]
    if "digit" in item.get("read", {}):
        parts.append(f"read {item['read']['digit'][0]}")
    return "  ".join(parts) + f"  s{item['seed']}"


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Words into lines no wider than `width` pixels (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def grid_image(report: QualityReport, columns: int = 12) -> np.ndarray:
    """Every picture of the report with its prompt under it and its verdicts (+ right, - wrong);
    the frame is green when every verdict is right, amber when some are, red when none is."""
    from PIL import Image, ImageDraw, ImageFont

    if not report.images:
        raise ValueError("the report holds no pictures to draw")
    font = ImageFont.load_default(size=FONT_SIZE)
    side = 64 * SCALE
    cell_w, cell_h = side + 2 * PAD, side + 2 * PAD + TEXT_LINES * LINE_HEIGHT
    columns = max(1, min(columns, len(report.images)))
    rows = -(-len(report.images) // columns)
    width = columns * cell_w
    measure_draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title = (_wrap(measure_draw, f"{report.source}: fidelity {report.fidelity:.1%} over {report.n} pictures", font,
                   width - 2 * PAD)
             + _wrap(measure_draw, "frame: green every verdict right, amber some, red none; + right, - wrong; "
                     "s = seed", font, width - 2 * PAD))
    title_h = len(title) * LINE_HEIGHT + PAD
    canvas = Image.new("RGB", (width, title_h + rows * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for row, text in enumerate(title):
        draw.text((PAD, 2 + row * LINE_HEIGHT), text, fill="black", font=font)
    for index, (image, item) in enumerate(zip(report.images, report.items)):
        x, y = (index % columns) * cell_w, title_h + (index // columns) * cell_h
        values = [v for vs in item["verdicts"].values() for v in vs]
        frame = ALL_RIGHT if all(values) else SOME_RIGHT if any(values) else NONE_RIGHT
        draw.rectangle((x + PAD - FRAME, y + PAD - FRAME, x + PAD + side + FRAME - 1, y + PAD + side + FRAME - 1),
                       fill=frame)
        canvas.paste(Image.fromarray(image).resize((side, side), Image.NEAREST), (x + PAD, y + PAD))
        lines = _wrap(draw, item["prompt"], font, side)[:TEXT_LINES - 1] + [_verdict_line(item)]
        for row, text in enumerate(lines):
            draw.text((x + PAD, y + side + 2 * PAD + row * LINE_HEIGHT), text,
                      fill="black" if row < len(lines) - 1 else frame, font=font)
    return np.asarray(canvas)
