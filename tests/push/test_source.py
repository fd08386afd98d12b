"""Reading exports for `imagesync push`: encodings, delimiters, shapes and located errors."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from imagesync.push.source import SourceError, load

HEADER = "item_number{d}url{d}sort{d}alt{d}attr:Color{d}skip_if_no_variant_matches\r\n"


@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ";"), ("cp1252", "\t"), ("utf-16", "|")],
)
def test_csv_encoding_and_delimiter_are_detected(
    tmp_path: Path, encoding: str, delimiter: str
) -> None:
    d = delimiter
    text = HEADER.format(d=d) + (
        f"p1{d}https://cdn.test/a.jpg{d}1{d}Rød kjole{d}100{d}true\r\n"
        f"p1{d}https://cdn.test/b.jpg{d}2{d}Grüße{d}{d}\r\n"
        f"p2{d}https://cdn.test/c.jpg{d}1{d}{d}{d}\r\n"
    )
    path = tmp_path / "export.csv"
    path.write_bytes(text.encode(encoding))
    loaded = load(str(path))
    assert loaded.problems == []
    p1, p2 = loaded.products
    assert [i.alt for i in p1.images] == ["Rød kjole", "Grüße"]
    assert p1.images[0].attach_to_variants_matching_attribute_code == {"Color": "100"}
    assert p1.images[0].skip_if_no_variant_matches_attribute_code is True
    assert p1.images[1].attach_to_variants_matching_attribute_code is None
    assert (p2.item_number, p2.images[0].sort) == ("p2", 1)


def test_an_unknown_column_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("item_number,url,sortt\np1,https://cdn.test/a.jpg,1\n")
    with pytest.raises(SourceError, match="line 1: unknown column 'sortt'"):
        load(str(path))


def test_json_lines_problems_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    good = {"item_number": "p1", "images": [{"url": "https://cdn.test/a.jpg", "sort": 1}]}
    bad = {"item_number": "p2", "images": [{"url": "https://cdn.test/b.jpg", "sort": "x"}]}
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(bad) + "\n")
    loaded = load(str(path))
    assert [p.item_number for p in loaded.products] == ["p1"]
    [problem] = loaded.problems
    assert (problem.line, problem.column, problem.item_number) == (3, "/images/0/sort", "p2")


def test_a_request_document_is_read_and_a_repeated_product_refused(tmp_path: Path) -> None:
    product = {"item_number": "p1", "images": []}
    path = tmp_path / "request.json"
    path.write_text(json.dumps({"product_images": [product, product]}))
    loaded = load(str(path))
    assert loaded.invalid == ["p1"]
    assert "appears again" in loaded.problems[0].detail
    bad = {"item_number": "p2", "images": [{"url": "https://cdn.test/a.jpg", "sort": 1}] * 2}
    path.write_text(json.dumps({"products": [product, bad]}))
    [problem] = load(str(path)).problems
    assert (problem.column, problem.item_number) == ("/products/1/images/1/url", "p2")
    assert "the same url as image 0" in problem.detail


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "request.json"
    path.write_text('{"products": [\n  {"item_number": "p1",]}')
    with pytest.raises(SourceError, match="line 2, column 24: not JSON"):
        load(str(path))


def test_standard_input_is_read_by_its_content(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [
        json.dumps(
            {"item_number": f"p{n}", "images": [{"url": "https://cdn.test/a.jpg", "sort": 1}]}
        )
        for n in range(2)
    ]
    stdin = io.TextIOWrapper(io.BytesIO("\n".join(lines).encode()))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert [p.item_number for p in load("-").products] == ["p0", "p1"]


def test_every_problem_of_a_file_is_reported_in_one_pass(tmp_path: Path) -> None:
    """A repeated image row was reported only once the product's other errors were
    fixed: a round per problem."""
    d = ","
    text = HEADER.format(d=d) + (
        f"p1{d}https://cdn.test/a.jpg{d}x{d}{d}{d}\r\n"  # line 2: sort is not a number
        f"p1{d}https://cdn.test/a.jpg{d}2{d}{d}{d}\r\n"  # line 3: the same url again
        f"p2{d}https://cdn.test/c.jpg{d}1{d}{d}{d}\r\n"
    )
    path = tmp_path / "export.csv"
    path.write_text(text)
    loaded = load(str(path))
    assert loaded.invalid == ["p1"]
    found = sorted((p.line, p.column) for p in loaded.problems)
    assert found == [(2, "sort"), (3, "url")], loaded.problems
    assert "the same url as the image at line 2" in str(loaded.problems[-1])
