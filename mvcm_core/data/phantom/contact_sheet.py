"""Contact sheet: rendered studies, PA and lateral side by side, captioned with their findings."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mvcm_core.data.phantom.dataset import StudySpec
from mvcm_core.data.phantom.render import render_study


def caption(spec: StudySpec, width_chars: int) -> list[str]:
    """Caption lines: study id and its findings (term, side, lobe / zone, severity, subtype)."""
    parts = []
    for f in spec.findings:
        detail = ", ".join(v for v in (f.side, f.lobe, f.zone, f.severity, f.subtype) if v)
        parts.append(f.term + (f" ({detail})" if detail else ""))
    lines = textwrap.wrap(f"{spec.study_id}: " + "; ".join(parts), width_chars)
    return lines[:3]


def contact_sheet(specs: list[StudySpec], path: str | Path, size: int = 256, columns: int = 3) -> Path:
    """Render ``specs`` and write a PNG grid of (PA | lateral + caption) tiles."""
    text_h = 14 * 3 + 6
    tile_w, tile_h = 2 * size + 6, size + text_h
    rows = (len(specs) + columns - 1) // columns
    sheet = Image.new("L", (columns * tile_w + 10, rows * tile_h + 10), 255)
    draw = ImageDraw.Draw(sheet)
    for index, spec in enumerate(specs):
        out = render_study(spec.findings, spec.seed, size)
        pair = np.hstack([out["PA"]["image"], np.ones((size, 4), np.float32), out["LL"]["image"]])
        x0 = 5 + (index % columns) * tile_w
        y0 = 5 + (index // columns) * tile_h
        sheet.paste(Image.fromarray((pair * 255 + 0.5).astype(np.uint8)), (x0, y0))
        for k, line in enumerate(caption(spec, width_chars=int(2 * size / 6.2))):
            draw.text((x0 + 2, y0 + size + 2 + 14 * k), line, fill=0, font_size=12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m mvcm_core.data.phantom.contact_sheet OUT.png [--studies 12] [--seed 0] [--source auto]``."""
    import argparse

    from mvcm_core.data.phantom.dataset import openi_specs, random_specs

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("out")
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--source", choices=("auto", "openi", "random"), default="auto")
    args = parser.parse_args(argv)
    specs = None
    if args.source != "random":
        try:  # prefer abnormal reports so the sheet shows findings
            pool = openi_specs(args.studies * 6, args.seed)
            abnormal = [s for s in pool if any(f.term != "normal" for f in s.findings)]
            specs = (abnormal[: args.studies - 2] + [s for s in pool if s not in abnormal][:2])[: args.studies]
        except Exception:  # noqa: BLE001 - the corpus is optional
            if args.source == "openi":
                raise
    specs = specs or random_specs(args.studies, args.seed)
    print(contact_sheet(specs, args.out, size=args.size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
