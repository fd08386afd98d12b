"""The benchmark catalog: products with 5-10 variants (each a colour with a code) and 5
photo-like 1600x1600 JPEGs each (gradients and grain, 300-600 KB), written once under
bench/.cache/ and reused. Each file is distinct (its own bytes and sha256): a pool of
base photos, each copy carrying its own name in a JPEG comment."""

from __future__ import annotations

import io
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image, ImageChops, ImageFilter

CACHE = Path(__file__).parent / ".cache"
IMAGES_PER_PRODUCT = 5
BASE_PHOTOS = 40
COLORS = [(f"Colour {n}", f"{100 + n}") for n in range(10)]


@dataclass(frozen=True)
class Product:
    item_number: str
    variants: list[tuple[str, str]]  # (sku, colour)
    images: list[str]  # file names under the catalog's folder


@dataclass(frozen=True)
class Catalog:
    root: Path
    products: list[Product]

    @property
    def images(self) -> int:
        return sum(len(p.images) for p in self.products)

    def files(self) -> list[Path]:
        return [self.root / name for p in self.products for name in p.images]


def photo(seed: int, size: int = 1600) -> bytes:
    """A photo-like JPEG: colour gradients, a tint and fine grain (no flat colour)."""
    rnd = random.Random(seed)
    g = Image.linear_gradient("L").resize((size, size)).rotate(rnd.randrange(360))
    r = Image.radial_gradient("L").resize((size, size))
    b = ImageChops.offset(g, rnd.randrange(size), rnd.randrange(size))
    tint = Image.new("RGB", (size, size), tuple(rnd.randrange(256) for _ in range(3)))
    image = Image.blend(Image.merge("RGB", (g, r, b)), tint, 0.3)
    grain = Image.effect_noise((size, size), 40).filter(ImageFilter.GaussianBlur(0.7))
    noise = Image.merge(
        "RGB", (grain, ImageChops.offset(grain, 7, 3), ImageChops.offset(grain, 3, 11))
    )
    image = Image.blend(image, noise, rnd.uniform(0.2, 0.32))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture with a COM segment after SOI: other bytes, the same decode."""
    payload = text.encode()
    segment = b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload
    return jpeg[:2] + segment + jpeg[2:]


def build(products: int) -> Catalog:
    """The catalog of `products` products, from the cache when it was built before."""
    root = CACHE / f"catalog-{products}"
    manifest = root / "manifest.json"
    if manifest.exists():
        found = json.loads(manifest.read_text())
        return Catalog(
            root,
            [
                Product(p["item_number"], [tuple(v) for v in p["variants"]], p["images"])
                for p in found
            ],
        )
    root.mkdir(parents=True, exist_ok=True)
    pool_dir = CACHE / "photos"
    pool_dir.mkdir(parents=True, exist_ok=True)
    pool = []
    for n in range(BASE_PHOTOS):
        path = pool_dir / f"{n}.jpg"
        if not path.exists():
            path.write_bytes(photo(n))
        pool.append(path.read_bytes())
    rnd = random.Random(products)
    made = []
    for p in range(products):
        item = f"P{p:05d}"
        variants = [(f"{item}-{v}", COLORS[v][0]) for v in range(rnd.randint(5, 10))]
        names = []
        for i in range(IMAGES_PER_PRODUCT):
            name = f"{item}-{i}.jpg"
            (root / name).write_bytes(with_comment(rnd.choice(pool), name))
            names.append(name)
        made.append(Product(item, variants, names))
    manifest.write_text(json.dumps([asdict(p) for p in made]))
    return Catalog(root, made)
