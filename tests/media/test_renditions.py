"""Renditions: WebP at each width narrower than the original, oriented, metadata-free."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageCms

from imagesync.media import renditions
from imagesync.media.probe import MediaError
from imagesync.media.renditions import make_renditions, target_widths
from tests.media import samples


def opened(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_widths_are_never_upscaled() -> None:
    assert target_widths(1600, (200, 400, 800)) == [200, 400, 800]
    assert target_widths(500, (200, 400, 800)) == [200, 400]
    assert target_widths(400, (200, 400, 800)) == [200]
    assert target_widths(150, (200, 400, 800)) == []


def test_each_width_is_a_webp_with_the_original_aspect_ratio() -> None:
    made = make_renditions(samples.jpeg(1600, 1200), [200, 400, 800])
    assert sorted(made) == [200, 400, 800]
    for width, rendered in made.items():
        image = opened(rendered.data)
        assert image.format == "WEBP"
        assert image.size == (width, width * 3 // 4) == (rendered.width, rendered.height)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    made = make_renditions(samples.oriented_jpeg(orientation, 600, 400), [200])
    image = opened(made[200].data).convert("RGB")
    assert image.size == (200, 133)
    red, blue = samples.RED, samples.BLUE
    # Top left shows red, bottom right blue, whatever the stored orientation.
    assert _near(image.getpixel((10, 10)), red), orientation
    assert _near(image.getpixel((190, 120)), blue), orientation
    assert _near(image.getpixel((190, 10)), blue), orientation


def test_metadata_is_stripped() -> None:
    original = samples.jpeg_with_gps()
    assert opened(original).getexif().get_ifd(0x8825)  # the original has GPS
    image = opened(make_renditions(original, [400])[400].data)
    assert not image.getexif()
    assert "exif" not in image.info
    assert "xmp" not in image.info


def test_an_rgb_originals_colour_profile_travels_with_its_renditions() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    Image.new("RGB", (600, 400), samples.RED).save(
        buffer, "JPEG", icc_profile=profile, exif=samples_gps_exif()
    )
    image = opened(make_renditions(buffer.getvalue(), [200])[200].data)
    assert image.info.get("icc_profile") == profile  # colour, not metadata
    assert not image.getexif()


def test_a_cmyk_original_gives_rgb_renditions_without_its_profile() -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (600, 400), (0, 255, 255, 0)).save(buffer, "JPEG")
    image = opened(make_renditions(buffer.getvalue(), [200])[200].data)
    assert image.mode == "RGB"
    assert "icc_profile" not in image.info
    pixel = image.getpixel((10, 10))
    assert isinstance(pixel, tuple)
    assert pixel[0] > 200 > max(pixel[1], pixel[2]) + 100  # still red


def samples_gps_exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x8825] = {1: "N", 2: (59.0, 54.0, 0.0)}
    return exif


def test_transparency_is_kept() -> None:
    image = opened(make_renditions(samples.png(600, 300, "RGBA"), [200])[200].data)
    assert image.mode == "RGBA"
    assert image.getpixel((5, 5))[3] == 128  # type: ignore[index]


def test_animations_give_their_first_frame() -> None:
    image = opened(make_renditions(samples.gif(5, side=300), [200])[200].data)
    assert image.size == (200, 200)
    assert getattr(image, "n_frames", 1) == 1


@pytest.mark.parametrize("original", [samples.webp(500, 250), samples.avif(500, 250)])
def test_webp_and_avif_originals_get_renditions_too(original: bytes) -> None:
    assert opened(make_renditions(original, [200])[200].data).size == (200, 100)


def test_damaged_originals_fail_with_a_code() -> None:
    with pytest.raises(MediaError) as caught:
        make_renditions(samples.truncated_jpeg(), [200])
    assert caught.value.code == "corrupt_image"


def _near(pixel: object, color: tuple[int, int, int]) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) < 40 for a, b in zip(pixel, color, strict=True))


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 400),
    height=st.integers(1, 400),
    factor=st.integers(2, 9),
    mode=st.sampled_from(["L", "LA", "RGB", "RGBA"]),
)
def test_reducing_a_strip_at_a_time_is_one_reduce(
    width: int, height: int, factor: int, mode: str
) -> None:
    image = Image.effect_noise((width, height), 80).convert(mode)
    with patch.object(renditions, "STRIP_BYTES", 4 * width * factor):  # a strip per block row
        reduced = renditions._reduced(image, factor)
    expected = image.reduce(factor)
    assert reduced.size == expected.size
    assert reduced.tobytes() == expected.tobytes()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_a_large_png_is_reduced_then_oriented(orientation: int) -> None:
    # 2400 px wide for a 200 px rendition: reduced by 4 before anything else.
    shown = Image.new("RGB", (2400, 1600), samples.BLUE)
    shown.paste(samples.RED, (0, 0, 1200, 800))
    inverse = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}.get(
        orientation, Image.Transpose.ROTATE_270
    )
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    shown.transpose(inverse).save(buffer, "PNG", exif=exif)
    made = make_renditions(buffer.getvalue(), [200])
    image = opened(made[200].data).convert("RGB")
    assert image.size == (200, 133)
    assert image.getpixel((20, 20)) == pytest.approx(samples.RED, abs=12)
    assert image.getpixel((180, 110)) == pytest.approx(samples.BLUE, abs=12)


# The peak is VmHWM, this address space's own: ru_maxrss survives exec, so a child of a
# big test process would report the parent's size.
MEASURE = """
import sys
from pathlib import Path
from imagesync.media.probe import probe
from imagesync.media.renditions import make_renditions
path = Path(sys.argv[1])
probe(path)
made = make_renditions(path.read_bytes(), [200, 400, 800])
assert sorted(made) == [200, 400, 800]
status = Path("/proc/self/status").read_text().splitlines()
print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024)
"""


def test_a_deep_png_is_rendered_holding_one_copy_of_its_pixels(tmp_path: Path) -> None:
    """7000 x 7000 x 16-bit RGBA: Pillow holds 196 MB of pixels. Probing and rendering
    it in a fresh process peaked at 639 MB before renditions reduced it first (a
    transposed copy, a converted copy and a premultiplied copy of the full size)."""
    path = tmp_path / "deep.png"
    path.write_bytes(samples.png16(7000, 7000))
    measured = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    peak_mb = int(measured.stdout.split()[-1])
    assert peak_mb < 360, peak_mb
