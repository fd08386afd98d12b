"""Renditions: what making 200/400/800 px WebP copies of one original costs, as a ratio
of decoding that original once (the baseline, measured in the same run).

    .venv/bin/python bench/renditions.py [--size 1600] [--repeat 15]

The originals are photo-like JPEGs (noise over gradients, 4:2:0, quality 90), the kind
a DAM sends. Reports the median per original; one thread.
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageChops, ImageFilter

from imagesync.media.renditions import make_renditions


def photo(size: int, grain: float) -> bytes:
    gradient = Image.linear_gradient("L").resize((size, size))
    noise = Image.effect_noise((size, size), grain).filter(ImageFilter.GaussianBlur(1.5))
    image = Image.merge("RGB", (gradient, noise, gradient.rotate(90)))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def median_ms(run: Callable[[], object], repeat: int) -> float:
    run()  # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def decode(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def no_draft(data: bytes, widths: list[int], method: int) -> None:
    """The obvious way: decode in full, resize the original to each width."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        base = image.convert("RGB")
    for width in widths:
        height = round(base.height * width / base.width)
        out = io.BytesIO()
        base.resize((width, height), Image.Resampling.LANCZOS).save(
            out, "WEBP", quality=80, method=method
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=1600)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    for grain, kind in ((10, "smooth (studio shot)"), (40, "grainy (textile close-up)")):
        run_one(photo(args.size, grain), kind, args.size, args.repeat)


def run_one(data: bytes, kind: str, size: int, repeat: int) -> None:
    widths = [200, 400, 800]
    baseline = median_ms(lambda: decode(data), repeat)
    print(f"\n## {kind}: {size}x{size} JPEG, {len(data) / 1024:.0f} KiB")
    print(f"baseline, one full decode: {baseline:.1f} ms")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("full decode, each width from it, method 4", lambda: no_draft(data, widths, 4)),
        ("draft 2x, cascade, method 2", lambda: make_renditions(data, widths, draft_margin=2)),
        ("draft to size, cascade, method 0", lambda: make_renditions(data, widths, method=0)),
        ("draft to size, cascade, method 2 (chosen)", lambda: make_renditions(data, widths)),
        ("draft to size, cascade, method 4", lambda: make_renditions(data, widths, method=4)),
        ("draft to size, cascade, method 6", lambda: make_renditions(data, widths, method=6)),
    ]
    print(f"{'200/400/800 px WebP q80':44} {'ms':>7} {'x decode':>9}")
    for name, run in cases:
        ms = median_ms(run, repeat)
        print(f"{name:44} {ms:7.1f} {ms / baseline:9.2f}")
    with Image.open(io.BytesIO(data)) as original:
        reference = original.convert("RGB").resize((800, 800), Image.Resampling.LANCZOS)
    print(f"\n{'draft, method':14} {'KiB of 200 / 400 / 800 px':28} {'PSNR at 800 px':>15}")
    for margin, method in ((2.0, 2), (1.0, 0), (1.0, 2), (1.0, 4), (1.0, 6)):
        made = make_renditions(data, widths, method=method, draft_margin=margin)
        listed = " / ".join(f"{len(made[w].data) / 1024:.1f}" for w in widths)
        with Image.open(io.BytesIO(made[800].data)) as decoded:
            quality = psnr(reference, decoded.convert("RGB"))
        print(f"{margin:g}x, {method:<9} {listed:28} {quality:12.2f} dB")


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio of b against a, over all channels."""
    histogram = ImageChops.difference(a, b).histogram()
    squares = sum(count * (i % 256) ** 2 for i, count in enumerate(histogram))
    mse = squares / (a.width * a.height * 3)
    return 10 * math.log10(255**2 / mse) if mse else float("inf")


if __name__ == "__main__":
    main()
