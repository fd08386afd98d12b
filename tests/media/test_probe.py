"""What a downloaded file really is: hostile files are refused with a typed code,
before decoding where the header already tells, and never with a crash."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from imagesync.media.probe import MediaError, MediaLimits, probe, read_header
from tests.media import samples


def probe_bytes(tmp_path: Path, data: bytes, **limits: int) -> str:
    path = tmp_path / "file"
    path.write_bytes(data)
    try:
        probe(path, limits=MediaLimits(**limits))
    except MediaError as exc:
        return exc.code
    return "ok"


@pytest.mark.parametrize(
    ("data", "kind", "size"),
    [
        (samples.jpeg(64, 48), "jpeg", (64, 48)),
        (samples.png(32, 20), "png", (32, 20)),
        (samples.png(8, 8, "RGBA"), "png", (8, 8)),
        (samples.gif(3), "gif", (16, 16)),
        (samples.webp(40, 30), "webp", (40, 30)),
        (samples.avif(40, 30), "avif", (40, 30)),
    ],
)
def test_images_are_identified_by_their_bytes(
    tmp_path: Path, data: bytes, kind: str, size: tuple[int, int]
) -> None:
    path = tmp_path / "image.bin"  # the name and any Content-Type never decide
    path.write_bytes(data)
    probed = probe(path)
    assert (probed.format, probed.width, probed.height) == (kind, *size)


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (samples.HTML, "not_an_image"),
        (samples.TEXT, "not_an_image"),
        (b"", "not_an_image"),
        (samples.SVG_SCRIPT, "unsupported_format"),
        (samples.SVG_XXE, "unsupported_format"),
        (samples.SVG_DOCTYPE_FIRST, "unsupported_format"),
        (samples.truncated_jpeg(), "corrupt_image"),
        (samples.png_with_bad_crc(), "corrupt_image"),
        (samples.png()[:60], "corrupt_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "corrupt_image"),
        (b"\xff\xd8\xff" + b"\x00" * 200, "corrupt_image"),
        (b"GIF89a" + b"\xff" * 50, "corrupt_image"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 " + b"\x00" * 30, "corrupt_image"),
        (samples.png_pixel_bomb(), "too_many_pixels"),
        (samples.jpeg_claiming(65_000, 65_000), "too_many_pixels"),
        (samples.gif(101), "too_many_frames"),
    ],
)
def test_hostile_files_are_refused_with_a_code(tmp_path: Path, data: bytes, code: str) -> None:
    assert probe_bytes(tmp_path, data) == code


def header_of(tmp_path: Path, data: bytes) -> int:
    path = tmp_path / "file"
    path.write_bytes(data)
    return read_header(path).decoded_bytes


@pytest.mark.parametrize(
    ("data", "decoded"),
    [
        # What the file stores: 16-bit RGBA is 8 bytes a pixel, not Pillow's 4.
        pytest.param(samples.png16(70, 50), 70 * 50 * 8, id="16-bit-rgba-png"),
        # libjpeg holds every coefficient of a progressive JPEG: 2 bytes x 3 components.
        pytest.param(samples.progressive_jpeg(64, 48), 64 * 48 * 6, id="progressive-jpeg"),
        # Pillow holds RGB as 4 bytes a pixel.
        pytest.param(samples.jpeg(64, 48), 64 * 48 * 4, id="baseline-jpeg"),
        pytest.param(samples.png(32, 20, "L"), 32 * 20, id="grey-png"),
        # Every frame counts.
        pytest.param(samples.gif(10, 32), 32 * 32 * 10, id="animation"),
    ],
)
def test_an_image_is_judged_by_its_decoded_bytes(tmp_path: Path, data: bytes, decoded: int) -> None:
    assert header_of(tmp_path, data) == decoded
    assert probe_bytes(tmp_path, data, max_decoded_bytes=decoded) == "ok"
    assert probe_bytes(tmp_path, data, max_decoded_bytes=decoded - 1) == "too_much_decoded"


def test_a_small_file_of_deep_pixels_is_refused_before_decoding(tmp_path: Path) -> None:
    # 381 KB of file, 392 MB of pixels: refused from the header, so nothing is decoded.
    data = samples.png16(7000, 7000)
    assert len(data) < 400_000
    start = time.perf_counter()
    assert probe_bytes(tmp_path, data, max_decoded_bytes=256 * 2**20) == "too_much_decoded"
    assert time.perf_counter() - start < 0.5
    assert header_of(tmp_path, data) == 7000 * 7000 * 8


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(samples.png_with_chunk_bomb(b"zTXt"), id="ztxt-bomb"),
        pytest.param(samples.png_with_chunk_bomb(b"iCCP"), id="iccp-bomb"),
        pytest.param(samples.png_with_huge_palette(), id="huge-palette"),
    ],
)
def test_chunk_bombs_are_refused_without_inflating_them(tmp_path: Path, data: bytes) -> None:
    start = time.perf_counter()
    assert probe_bytes(tmp_path, data) == "corrupt_image"
    assert time.perf_counter() - start < 0.5  # 200 MB were not inflated


def test_a_pixel_bomb_is_refused_from_its_header_in_no_time(tmp_path: Path) -> None:
    start = time.perf_counter()
    assert probe_bytes(tmp_path, samples.png_pixel_bomb(side=60_000)) == "too_many_pixels"
    assert time.perf_counter() - start < 0.5  # nothing was decoded


def test_limits_are_settings(tmp_path: Path) -> None:
    assert probe_bytes(tmp_path, samples.jpeg(100, 100), max_pixels=9_999) == "too_many_pixels"
    assert probe_bytes(tmp_path, samples.jpeg(100, 100), max_pixels=10_000) == "ok"
    assert probe_bytes(tmp_path, samples.gif(5), max_frames=4) == "too_many_frames"
    assert probe_bytes(tmp_path, samples.gif(5), max_frames=5) == "ok"
    assert probe_bytes(tmp_path, samples.gif(10, 32), max_total_pixels=10_239) == "too_many_pixels"


@pytest.mark.parametrize("orientation", range(1, 9))
def test_dimensions_are_as_displayed(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / "o.jpg"
    path.write_bytes(samples.oriented_jpeg(orientation, 60, 40))
    probed = probe(path)
    assert (probed.width, probed.height) == (60, 40)
    assert probed.orientation == orientation


@settings(max_examples=150, deadline=None)
@given(
    st.binary(max_size=2048),
    st.sampled_from([b"", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF89a"]),
)
def test_any_bytes_give_a_verdict_never_a_crash(
    tmp_path_factory: pytest.TempPathFactory, body: bytes, magic: bytes
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "file"
    path.write_bytes(magic + body)
    code = "ok"
    try:
        probe(path)
    except MediaError as exc:
        code = exc.code
    assert code in {
        "ok",
        "not_an_image",
        "unsupported_format",
        "corrupt_image",
        "too_many_pixels",
        "too_many_frames",
    }


@given(st.sampled_from(range(len(samples.jpeg(200, 100)) - 1)))
@settings(max_examples=40, deadline=None)
def test_a_jpeg_cut_anywhere_is_refused(tmp_path_factory: pytest.TempPathFactory, cut: int) -> None:
    path = tmp_path_factory.mktemp("cut") / "file"
    path.write_bytes(samples.jpeg(200, 100)[:cut])
    with pytest.raises(MediaError):
        probe(path)


def _grainy_jpeg() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((640, 480), 60).convert("RGB").save(out, "JPEG", quality=90)
    return out.getvalue()


GRAINY_JPEG = _grainy_jpeg()


@settings(max_examples=40, deadline=None)
@given(keep=st.floats(min_value=0.05, max_value=0.995))
def test_a_cut_jpeg_is_refused_although_it_is_checked_at_a_smaller_scale(
    keep: float, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """JPEGs are decoded at 1/8 scale to check them: every byte of their data is still
    read, so a file cut anywhere in its data is refused, as a full decode would."""
    path = tmp_path_factory.mktemp("cut") / "cut.jpg"
    path.write_bytes(GRAINY_JPEG[: int(len(GRAINY_JPEG) * keep)])
    with pytest.raises(MediaError) as refused:
        probe(path)
    assert refused.value.code == "corrupt_image"


def test_a_whole_jpeg_checked_at_a_smaller_scale_keeps_its_real_size(tmp_path: Path) -> None:
    path = tmp_path / "whole.jpg"
    path.write_bytes(GRAINY_JPEG)
    probed = probe(path)
    assert (probed.width, probed.height) == (640, 480)
