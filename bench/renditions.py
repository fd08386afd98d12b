"""Renditions: what making 200/400/800 px WebP copies of one original costs, as a ratio
of decoding that original once (the baseline, measured in the same run).

    .venv/bin/python bench/renditions.py [--size 1600] [--repeat 15]

The originals are photo-like JPEGs (noise over gradients, 4:2:0, quality 90), the kind
a DAM sends. Reports the median per original; one thread.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable

from PIL import Image, ImageFilter

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
        ("full decode, resize, WebP method 0", lambda: no_draft(data, widths, 0)),
        ("full decode, resize, WebP method 4", lambda: no_draft(data, widths, 4)),
        ("cascade, WebP method 0", lambda: make_renditions(data, widths, method=0)),
        ("cascade, WebP method 2", lambda: make_renditions(data, widths, method=2)),
        ("cascade, WebP method 4", lambda: make_renditions(data, widths, method=4)),
        ("cascade, WebP method 6", lambda: make_renditions(data, widths, method=6)),
    ]
    print(f"{'200/400/800 px WebP q80':44} {'ms':>7} {'x decode':>9}")
    for name, run in cases:
        ms = median_ms(run, repeat)
        print(f"{name:44} {ms:7.1f} {ms / baseline:9.2f}")
    for method in (0, 2, 4, 6):
        sizes = {w: len(r.data) for w, r in make_renditions(data, widths, method=method).items()}
        listed = ", ".join(f"{w} px {b / 1024:.1f} KiB" for w, b in sorted(sizes.items()))
        print(f"bytes at method {method}: {listed}")


if __name__ == "__main__":
    main()
