"""Reading an export into image syncs: CSV (one row per image) or JSON / JSON Lines in the
API's own request shape, validated here with the server's own schemas, every problem
named by line and column.

CSV columns: `item_number`, `url`, `sort` (required), `sort_b2c`, `alt`, `filename`,
`existance_key`, `skip_if_no_variant_matches`, and one `attr:NAME` column per attribute
an image's rule matches on (`attr:Color` holding `100`). An empty cell is an absent
value. The encoding (UTF-8 with or without a BOM, UTF-16 with a BOM, else Windows-1252)
and the delimiter (`,` `;` tab `|`) are detected.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from imagesync.sync.core.planner import identity_of
from imagesync.sync.schemas import ProductImagesIn

COLUMNS = (
    "item_number",
    "url",
    "sort",
    "sort_b2c",
    "alt",
    "filename",
    "existance_key",
    "skip_if_no_variant_matches",
)
ATTRIBUTE_PREFIX = "attr:"
_IMAGE_FIELDS = {"skip_if_no_variant_matches": "skip_if_no_variant_matches_attribute_code"}
_RULE = "attach_to_variants_matching_attribute_code"


class SourceError(Exception):
    """The file cannot be read at all (its shape, not a value in it)."""


@dataclass(frozen=True)
class Problem:
    """One problem with the file: where (`line`, and a CSV column or a JSON pointer) and
    what."""

    line: int | None
    column: str | None
    detail: str
    item_number: str | None = None

    def __str__(self) -> str:
        column = self.column and (
            f"at {self.column}" if self.column.startswith("/") else f"column {self.column}"
        )
        where = [f"line {self.line}" if self.line else None, column]
        place = ", ".join(w for w in where if w)
        return f"{place}: {self.detail}" if place else self.detail


@dataclass
class Loaded:
    """The valid products, in the file's order, and the problems of the others."""

    products: list[ProductImagesIn] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)  # item numbers left out

    @property
    def images(self) -> int:
        return sum(len(p.images) for p in self.products)


@dataclass
class _Draft:
    """A product as read, before validation: its images and where each came from."""

    item_number: str
    line: int
    body: dict[str, Any]
    image_lines: list[int] = field(default_factory=list)
    columns: dict[str, str] = field(default_factory=dict)  # request field -> CSV column
    pointer: str | None = None  # in JSON: where the product is ("/products/3")


def load(path: str) -> Loaded:
    """Read `path` (`-`: standard input) and validate every product in it."""
    data = _read_bytes(path)
    kind = _kind(path, data)
    text = _decode(data)
    drafts = _csv(text) if kind == "csv" else _json_lines(text) if kind == "jsonl" else _json(text)
    return _validate(drafts)


def _read_bytes(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None


def _kind(path: str, data: bytes) -> str:
    """`csv`, `json` or `jsonl`: by the file's extension, else by its first character
    (several lines that are each a JSON object are JSON Lines)."""
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        return "csv"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    text = data.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text[:1] == b"[":
        return "json"
    if text[:1] != b"{":
        return "csv"
    first, _, rest = text.partition(b"\n")
    try:
        json.loads(first)
    except ValueError:
        return "json"  # an object over several lines
    return "jsonl" if rest.strip() else "json"


def _decode(data: bytes) -> str:
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="strict")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")


# -- CSV --------------------------------------------------------------------------------


def _csv(text: str) -> list[_Draft]:
    try:
        dialect: Any = csv.Sniffer().sniff(text[:65536], delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(io.StringIO(text, newline=""), dialect)
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise SourceError("the file is empty") from None
    unknown = [
        name for name in header if name not in COLUMNS and not name.startswith(ATTRIBUTE_PREFIX)
    ]
    if unknown or "item_number" not in header or "url" not in header:
        problems = [f"unknown column {name!r}" for name in unknown]
        problems += [f"no {name!r} column" for name in ("item_number", "url") if name not in header]
        raise SourceError(
            "line 1: " + "; ".join(problems) + f" (columns: {', '.join(COLUMNS)}, attr:NAME)"
        )
    drafts: dict[str, _Draft] = {}
    line = reader.line_num + 1
    for row in reader:
        cells = dict(zip(header, (cell.strip() for cell in row), strict=False))
        if any(cells.values()):
            _add_row(drafts, cells, line)
        line = reader.line_num + 1
    return list(drafts.values())


def _add_row(drafts: dict[str, _Draft], cells: dict[str, str], line: int) -> None:
    item_number = cells.get("item_number", "")
    draft = drafts.get(item_number)
    if draft is None:
        draft = drafts[item_number] = _Draft(item_number, line, {"item_number": item_number})
        draft.body["images"] = []
        draft.columns = {"item_number": "item_number", _RULE: ATTRIBUTE_PREFIX}
    image: dict[str, Any] = {}
    rule: dict[str, str] = {}
    for column, value in cells.items():
        if not value or column == "item_number":
            continue
        if column.startswith(ATTRIBUTE_PREFIX):
            rule[column.removeprefix(ATTRIBUTE_PREFIX)] = value
        else:
            image[_IMAGE_FIELDS.get(column, column)] = value
            draft.columns[_IMAGE_FIELDS.get(column, column)] = column
    if rule:
        image[_RULE] = rule
    draft.body["images"].append(image)
    draft.image_lines.append(line)


# -- JSON -------------------------------------------------------------------------------


def _json(text: str) -> list[_Draft]:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SourceError(f"line {exc.lineno}, column {exc.colno}: not JSON: {exc.msg}") from None
    return list(_products_of(document, line=None))


def _json_lines(text: str) -> list[_Draft]:
    drafts: list[_Draft] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SourceError(f"line {number}, column {exc.colno}: not JSON: {exc.msg}") from None
        drafts.extend(_products_of(document, line=number))
    return drafts


def _products_of(document: Any, *, line: int | None) -> Iterator[_Draft]:
    """The products of a request object, of a list of products, or one product."""
    if isinstance(document, dict) and ("products" in document or "product_images" in document):
        key = "products" if "products" in document else "product_images"
        items, base = document[key], f"/{key}/"
    elif isinstance(document, list):
        items, base = document, "/"
    else:
        items, base = [document], None
    if not isinstance(items, list):
        raise SourceError(_at(line, "the products must be a list"))
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise SourceError(_at(line, f"a product must be an object, not {item!r:.40}"))
        number = item.get("item_number")
        images = item.get("images")
        count = len(images) if isinstance(images, list) else 0
        yield _Draft(
            str(number) if number is not None else "",
            line or 0,
            item,
            [line or 0] * count,
            pointer="" if base is None else f"{base}{n}",
        )


def _at(line: int | None, detail: str) -> str:
    return f"line {line}: {detail}" if line else detail


# -- validation -------------------------------------------------------------------------


def _validate(drafts: list[_Draft]) -> Loaded:
    loaded = Loaded()
    seen: dict[str, int] = {}
    for draft in drafts:
        problems = list(_problems(draft))
        if draft.item_number in seen and draft.item_number:
            problems.append(
                Problem(
                    draft.line or None,
                    "item_number",
                    f"product {draft.item_number!r} appears again (first at line "
                    f"{seen[draft.item_number]}); list each product once",
                )
            )
        seen.setdefault(draft.item_number, draft.line)
        if problems:
            loaded.problems.extend(
                Problem(p.line, p.column, p.detail, draft.item_number) for p in problems
            )
            loaded.invalid.append(draft.item_number)
        else:
            loaded.products.append(ProductImagesIn.model_validate(draft.body))
    return loaded


def _problems(draft: _Draft) -> Iterator[Problem]:
    """Every problem of the product at once: its invalid values and its repeated images
    (these were reported only once the rest was fixed, a round per problem)."""
    try:
        ProductImagesIn.model_validate(draft.body)
    except ValidationError as exc:
        for error in exc.errors():
            yield _located(draft, error["loc"], error["msg"])
    images = draft.body.get("images") if isinstance(draft.body, dict) else None
    first: dict[object, int] = {}
    for index, image in enumerate(images if isinstance(images, list) else []):
        url = image.get("url") if isinstance(image, dict) else None
        key = (
            image.get("existance_key", image.get("existence_key"))
            if isinstance(image, dict)
            else None
        )
        if not isinstance(url, str) or not isinstance(key, str | None):
            continue  # an invalid value, said above
        identity = identity_of(url, key or None)
        if identity in first:
            field_name = identity.kind
            other = (
                f"image {first[identity]}"
                if draft.pointer is not None
                else f"the image at line {_line_of(draft, first[identity])}"
            )
            yield _located(
                draft,
                ("images", index, field_name),
                f"the same {field_name} as {other}; each image of a product needs its own",
            )
        first.setdefault(identity, index)


def _located(draft: _Draft, loc: tuple[int | str, ...], message: str) -> Problem:
    """Where in the file: a CSV row's line and column, a JSON value's line and pointer."""
    if draft.pointer is not None:
        pointer = draft.pointer + "".join(f"/{part}" for part in loc)
        return Problem(draft.line or None, pointer or None, message)
    if len(loc) >= 2 and loc[0] == "images" and isinstance(loc[1], int):
        line = _line_of(draft, loc[1])
        name = str(loc[2]) if len(loc) > 2 else "images"
        column = draft.columns.get(name, name)
        if name == _RULE and len(loc) > 3 and column == ATTRIBUTE_PREFIX:
            column = f"{ATTRIBUTE_PREFIX}{loc[3]}"
        return Problem(line, column, message)
    name = str(loc[0]) if loc else ""
    return Problem(draft.line or None, draft.columns.get(name, name) or None, message)


def _line_of(draft: _Draft, index: int) -> int | None:
    if index < len(draft.image_lines):
        return draft.image_lines[index] or None
    return draft.line or None
