"""Renditions: WebP at each width narrower than the original, oriented, metadata-free."""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageCms

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
