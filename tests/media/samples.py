"""Image files for tests, made here byte by byte: good ones and hostile ones."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

# A corner marker for orientation tests: the top-left quarter is red, the rest blue.
RED = (255, 0, 0)
BLUE = (0, 0, 255)


def jpeg(width: int = 64, height: int = 48, *, exif: Image.Exif | None = None) -> bytes:
    image = Image.new("RGB", (width, height), BLUE)
    image.paste(RED, (0, 0, width // 2, height // 2))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif or Image.Exif())
    return buffer.getvalue()


def oriented_jpeg(orientation: int, width: int = 600, height: int = 400) -> bytes:
    """A JPEG whose stored pixels, shown with `orientation` applied, have their red
    quarter at the top left. Stored pixels are the inverse transform of that."""
    shown = Image.new("RGB", (width, height), BLUE)
    shown.paste(RED, (0, 0, width // 2, height // 2))
    inverse = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    stored = shown.transpose(inverse) if inverse is not None else shown
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    stored.save(buffer, "JPEG", quality=95, exif=exif)
    return buffer.getvalue()


def jpeg_with_gps() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    exif[0x8825] = {1: "N", 2: (59.0, 54.0, 0.0), 3: "E", 4: (10.0, 45.0, 0.0)}
    return jpeg(900, 600, exif=exif)


def png(width: int = 32, height: int = 32, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height), (10, 200, 30, 128)[: len(mode)]).save(buffer, "PNG")
    return buffer.getvalue()


def png_with_bad_crc() -> bytes:
    data = bytearray(png())
    at = data.index(b"IDAT")
    length = struct.unpack(">I", data[at - 4 : at])[0]
    data[at + 4 + length] ^= 0xFF  # first byte of the IDAT chunk's CRC
    return bytes(data)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_pixel_bomb(side: int = 100_000) -> bytes:
    """A valid-looking PNG header claiming side x side pixels (10 gigapixels), with a
    tiny compressed body: decoding it would need tens of gigabytes."""
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)  # 8-bit greyscale
    body = zlib.compress(b"\x00" * 4096, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )


def jpeg_claiming(width: int, height: int) -> bytes:
    """A real JPEG with its frame header rewritten to claim other dimensions."""
    data = bytearray(jpeg(16, 16))
    at = data.index(b"\xff\xc0")
    data[at + 5 : at + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def truncated_jpeg() -> bytes:
    data = jpeg(400, 300)
    return data[: len(data) // 2]


def gif(frames: int, side: int = 16) -> bytes:
    images = [Image.new("RGB", (side, side), (i % 256, (i * 7) % 256, 0)) for i in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=40)
    return buffer.getvalue()


def webp(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), BLUE).save(buffer, "WEBP")
    return buffer.getvalue()


def avif(width: int = 40, height: int = 30) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), BLUE).save(buffer, "AVIF")
    return buffer.getvalue()


SVG_SCRIPT = b"""<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">
<script>fetch('http://169.254.169.254/')</script><rect width="10" height="10"/></svg>"""

SVG_XXE = b"""<?xml version="1.0"?>
<!DOCTYPE svg [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<svg xmlns="http://www.w3.org/2000/svg"><text>&xxe;</text></svg>"""

SVG_DOCTYPE_FIRST = b"""<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "x.dtd">
<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>"""

HTML = b"<!doctype html><html><body><h1>404 Not Found</h1></body></html>"
TEXT = b"Access denied\n"


# The bomb corpus: small files whose decoding costs far more than their size says.


def png16(width: int, height: int, *, text: bytes = b"") -> bytes:
    """A 16-bit RGBA PNG (8 bytes a pixel), all zeros: 7000 x 7000 is 381 KB of file
    and 392 MB of pixels. `text` adds a tEXt chunk, so that copies differ in bytes."""
    header = struct.pack(">IIBBBBB", width, height, 16, 6, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + width * 8)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    chunks = _chunk(b"IHDR", header)
    if text:
        chunks += _chunk(b"tEXt", b"Comment\x00" + text)
    return b"\x89PNG\r\n\x1a\n" + chunks + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def progressive_jpeg(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), BLUE).save(buffer, "JPEG", progressive=True, quality=90)
    return buffer.getvalue()


def png_with_chunk_bomb(kind: bytes) -> bytes:
    """A tiny valid PNG carrying a zTXt or iCCP chunk that inflates to 200 MB."""
    body = zlib.compress(b"\x00" * (200 * 2**20), 9)
    bomb = _chunk(kind, (b"Comment\x00\x00" if kind == b"zTXt" else b"icc\x00\x00") + body)
    data = png(8, 8)
    at = data.index(b"IDAT") - 4
    return data[:at] + bomb + data[at:]


def png_with_huge_palette() -> bytes:
    """A palette PNG whose PLTE chunk claims 4096 entries (256 at most are allowed)."""
    header = struct.pack(">IIBBBBB", 16, 16, 8, 3, 0, 0, 0)
    palette = bytes(range(256)) * 48  # 4096 RGB entries
    body = zlib.compress(b"".join(b"\x00" + bytes(range(16)) for _ in range(16)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"PLTE", palette)
        + _chunk(b"IDAT", body)
        + _chunk(b"IEND", b"")
    )
