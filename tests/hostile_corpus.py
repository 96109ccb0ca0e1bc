"""A corpus of hostile and of valid-but-odd images, generated on the fly (nothing binary is committed).

`hostile()` lists files that must be refused with a 4xx: decompression bombs, huge header
dimensions, truncated and corrupt files, and types we do not decode. `odd_valid()` lists files that
must be accepted, each with the RGB colour its pixels must come out as. Every file is built here
from a few bytes or with Pillow, in well under a second altogether.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Hostile:
    name: str
    data: bytes
    status: int
    code: str


@dataclass(frozen=True)
class OddValid:
    name: str
    data: bytes
    rgb: tuple[int, int, int]  # every pixel must come out close to this colour
    tolerance: int = 6  # lossy formats get a little room


RED = (200, 30, 60)
BLUE = (20, 40, 220)
WHITE = (255, 255, 255)


def save(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def solid(colour: tuple[int, ...], size: tuple[int, int] = (32, 32), mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def paletted(colour: tuple[int, int, int], size: tuple[int, int] = (32, 32)) -> Image.Image:
    """A palette image holding exactly `colour` (the default web palette would dither it)."""
    return solid(colour, size).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)


# ---- hand-built files --------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes, extra: bytes = b"") -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def png_16bit(width: int, height: int, samples: tuple[int, ...], trns: bytes = b"") -> bytes:
    """A 16-bit PNG: grey (1 sample), grey+alpha (2), RGB (3) or RGBA (4) per pixel."""
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[len(samples)]
    row = b"\x00" + b"".join(struct.pack(">H", s) for s in samples) * width
    extra = png_chunk(b"tRNS", trns) if trns else b""
    return png(width, height, 16, colour_type, zlib.compress(row * height), extra)


def png_zero_bomb(side: int) -> bytes:
    """A 1-bit side x side PNG of zeros: a few KB on disk, side*side pixels once decoded."""
    row = b"\x00" * (1 + (side + 7) // 8)
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    return png(side, side, 1, 0, idat)


def png_text_bomb() -> bytes:
    """A 1x1 PNG whose zTXt chunk inflates to 50 MB."""
    text = png_chunk(b"zTXt", b"Comment\x00\x00" + zlib.compress(b"\x00" * (50 * 1024 * 1024), 9))
    return png(1, 1, 8, 0, zlib.compress(b"\x00\x00"), text)


def jpeg_with_size(width: int, height: int) -> bytes:
    data = save(solid(RED, (8, 8)), "JPEG")
    sof = data.index(b"\xff\xc0")
    return data[: sof + 5] + struct.pack(">HH", height, width) + data[sof + 9 :]


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(save(solid(RED, (4, 4)), "BMP"))
    data[18:26] = struct.pack("<ii", width, height)
    return bytes(data)


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"


def gif_frame(width: int, height: int) -> bytes:
    """An image descriptor and the LZW data of one pixel (enough for Pillow to read the header)."""
    return b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"


def gif_many_frames(frames: int, garbage_after_first: bool = False) -> bytes:
    """A GIF with `frames` frames: the first RED, the others BLUE (or undecodable garbage)."""
    first = save(paletted(RED, (16, 16)), "GIF")
    blue = save(paletted(BLUE, (16, 16)), "GIF")
    # A frame is everything from its Graphic Control Extension (or image descriptor) to the trailer.
    start = blue.find(b"\x21\xf9")
    frame = blue[start if start >= 0 else blue.index(b"\x2c") : -1]
    if garbage_after_first:
        frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 16, 16, 0) + b"\x08\x05\xff\xff\xff\xff\xff\x00"
    return first[:-1] + frame * (frames - 1) + b";"


def webp_canvas(width: int, height: int) -> bytes:
    """A WebP extended header (VP8X) announcing a width x height canvas, and nothing else."""
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return b"RIFF" + struct.pack("<I", 4 + len(vp8x)) + b"WEBP" + vp8x


def jpeg_with_exif(img: Image.Image, exif: bytes) -> bytes:
    data = save(img, "JPEG", quality=95)
    app1 = b"\xff\xe1" + struct.pack(">H", len(exif) + 8) + b"Exif\x00\x00" + exif
    return data[:2] + app1 + data[2:]


def tiff_orientation(value: int, *, broken: bool = False) -> bytes:
    """A little-endian TIFF/EXIF block with one Orientation entry (or an IFD pointing nowhere)."""
    if broken:
        return b"II*\x00" + struct.pack("<I", 0xFFFFFF00)
    return (
        b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHII", 274, 3, 1, value) + b"\x00" * 4
    )


def half_and_half(size: tuple[int, int] = (64, 32)) -> Image.Image:
    """Left half RED, right half BLUE: shows where a rotation put things."""
    img = solid(RED, size)
    img.paste(BLUE, (size[0] // 2, 0, size[0], size[1]))
    return img


def frames(*colours: tuple[int, int, int]) -> list[Image.Image]:
    return [solid(c, (16, 16)) for c in colours]


# ---- the corpus ---------------------------------------------------------------------------------


def hostile() -> list[Hostile]:
    png_ok = save(solid(RED), "PNG")
    jpeg_ok = save(solid(RED, (64, 64)), "JPEG")
    bad_crc = bytearray(png_ok)
    bad_crc[29] ^= 0xFF  # inside IHDR's CRC
    idat = png_ok.index(b"IDAT")
    bad_zlib = png_ok[: idat + 4] + b"\x00" * 8 + png_ok[idat + 12 :]
    too_large = [
        Hostile("png_bomb_1bit_12000x12000", png_zero_bomb(12_000), 413, "image_too_large"),
        Hostile("png_header_100000x100000", png(100_000, 100_000, 8, 2, b""), 413, "image_too_large"),
        Hostile("png_header_1x50000000", png(1, 50_000_000, 8, 0, b""), 413, "image_too_large"),
        Hostile("jpeg_header_65500x65500", jpeg_with_size(65_500, 65_500), 413, "image_too_large"),
        Hostile("bmp_header_60000x60000", bmp_with_size(60_000, 60_000), 413, "image_too_large"),
        Hostile("gif_screen_65535x65535", gif_header(65_535, 65_535) + gif_frame(1, 1) + b";", 413, "image_too_large"),
        Hostile(
            "gif_frame_bigger_than_screen", gif_header(1, 1) + gif_frame(60_000, 60_000) + b";", 413, "image_too_large"
        ),
        Hostile("webp_canvas_16384x16384", webp_canvas(16_384, 16_384), 413, "image_too_large"),
    ]
    broken = [
        Hostile("png_truncated", png_ok[: len(png_ok) // 2], 422, "image_decode_error"),
        Hostile("png_bad_crc", bytes(bad_crc), 422, "image_decode_error"),
        Hostile("png_bad_zlib", bad_zlib, 422, "image_decode_error"),
        Hostile("png_signature_only", b"\x89PNG\r\n\x1a\n", 422, "image_decode_error"),
        Hostile("png_ztxt_50mb", png_text_bomb(), 422, "image_decode_error"),
        Hostile("jpeg_truncated", jpeg_ok[:200], 422, "image_decode_error"),
        Hostile("jpeg_soi_then_garbage", b"\xff\xd8\xff" + bytes(range(256)) * 8, 422, "image_decode_error"),
        Hostile("gif_truncated", save(paletted(RED), "GIF")[:30], 422, "image_decode_error"),
        Hostile("gif_header_then_html", b"GIF89a<html><script>alert(1)</script></html>", 422, "image_decode_error"),
        Hostile("webp_truncated", save(solid(RED), "WEBP")[:40], 422, "image_decode_error"),
        Hostile("bmp_truncated", save(solid(RED), "BMP")[:60], 422, "image_decode_error"),
        Hostile("bmp_zero_width", bmp_with_size(0, 10), 422, "image_decode_error"),
    ]
    unsupported = [
        Hostile("empty", b"", 415, "unsupported_image_type"),
        Hostile("html", b"<!doctype html><html><body>not an image</body></html>", 415, "unsupported_image_type"),
        Hostile(
            "svg", b"<svg xmlns='http://www.w3.org/2000/svg'><script>x</script></svg>", 415, "unsupported_image_type"
        ),
        Hostile("eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", 415, "unsupported_image_type"),
        Hostile("eps_binary", b"\xc5\xd0\xd3\xc6" + b"\x00" * 60, 415, "unsupported_image_type"),
        Hostile("pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF", 415, "unsupported_image_type"),
        Hostile("tiff", save(solid(RED), "TIFF"), 415, "unsupported_image_type"),
        Hostile("ico", save(solid(RED), "ICO"), 415, "unsupported_image_type"),
        Hostile("ppm", save(solid(RED), "PPM"), 415, "unsupported_image_type"),
        Hostile("psd", b"8BPS\x00\x01" + b"\x00" * 64, 415, "unsupported_image_type"),
        Hostile("heic", b"\x00\x00\x00\x18ftypheic" + b"\x00" * 32, 415, "unsupported_image_type"),
        Hostile("jpeg2000", b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00" * 32, 415, "unsupported_image_type"),
        Hostile("zip", b"PK\x03\x04" + b"\x00" * 64, 415, "unsupported_image_type"),
        Hostile("riff_wave_not_webp", b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 32, 415, "unsupported_image_type"),
    ]
    return too_large + broken + unsupported


def odd_valid() -> list[OddValid]:
    palette = paletted(RED)
    transparent_index = palette.getpixel((0, 0))
    cases = [
        OddValid("jpeg_cmyk", save(solid(RED).convert("CMYK"), "JPEG", quality=95), RED),
        OddValid("jpeg_grey", save(solid((90,), mode="L"), "JPEG", quality=95), (90, 90, 90)),
        OddValid("jpeg_progressive", save(solid(RED), "JPEG", quality=95, progressive=True), RED),
        OddValid("jpeg_1x1", save(solid(RED, (1, 1)), "JPEG", quality=95), RED),
        OddValid("jpeg_bad_exif_ignored", jpeg_with_exif(solid(RED), tiff_orientation(1, broken=True)), RED),
        OddValid("jpeg_exif_orientation_9_ignored", jpeg_with_exif(solid(RED), tiff_orientation(9)), RED),
        OddValid("png_grey16", png_16bit(8, 8, (0x8080,)), (128, 128, 128), 0),
        OddValid("png_grey16_transparent", png_16bit(8, 8, (0x1234,), trns=struct.pack(">H", 0x1234)), WHITE, 0),
        OddValid("png_grey_alpha16_opaque", png_16bit(8, 8, (0x4000, 0xFFFF)), (64, 64, 64), 0),
        OddValid("png_rgb16", png_16bit(8, 8, tuple(c * 257 for c in RED)), RED, 0),
        OddValid("png_rgba16_transparent", png_16bit(8, 8, (*(c * 257 for c in RED), 0)), WHITE, 0),
        OddValid("png_palette", save(paletted(RED), "PNG"), RED, 0),
        OddValid("png_palette_trns", save(palette, "PNG", transparency=transparent_index), WHITE, 0),
        OddValid("png_la_transparent", save(solid((40, 0), mode="LA"), "PNG"), WHITE, 0),
        OddValid("png_rgba_opaque", save(solid((*RED, 255), mode="RGBA"), "PNG"), RED, 0),
        OddValid("png_rgba_transparent_black", save(solid((0, 0, 0, 0), mode="RGBA"), "PNG"), WHITE, 0),
        OddValid("png_l", save(solid((77,), mode="L"), "PNG"), (77, 77, 77), 0),
        OddValid("png_1bit", save(solid((1,), mode="1"), "PNG"), WHITE, 0),
        OddValid("png_interlaced", save(solid(RED), "PNG", interlace=1), RED, 0),
        OddValid("png_1x1", save(solid(RED, (1, 1)), "PNG"), RED, 0),
        OddValid("png_1x3000", save(solid(RED, (1, 3000)), "PNG"), RED, 0),
        OddValid("webp_lossy", save(solid(RED), "WEBP", quality=95), RED, 8),
        OddValid("webp_lossless_transparent", save(solid((*RED, 0), mode="RGBA"), "WEBP", lossless=True), WHITE, 0),
        OddValid("bmp_24", save(solid(RED), "BMP"), RED, 0),
        OddValid("bmp_8bit_palette", save(paletted(RED), "BMP"), RED, 0),
        OddValid("gif", save(paletted(RED), "GIF"), RED, 0),
        OddValid("gif_transparent", save(palette, "GIF", transparency=transparent_index), WHITE, 0),
        OddValid("gif_20000_frames_first_is_red", gif_many_frames(20_000), RED, 0),
        OddValid("gif_garbage_after_first_frame", gif_many_frames(50, garbage_after_first=True), RED, 0),
        OddValid("apng_first_frame", save_animation(frames(RED, BLUE, BLUE), "PNG"), RED, 0),
        OddValid("webp_animated_first_frame", save_animation(frames(RED, BLUE, BLUE), "WEBP", lossless=True), RED, 0),
    ]
    return cases


def save_animation(images: list[Image.Image], fmt: str, **options: object) -> bytes:
    return save(images[0], fmt, save_all=True, append_images=images[1:], duration=40, loop=0, **options)


def exif_rotated_jpeg() -> bytes:
    """64x32 stored (RED left, BLUE right) with Orientation 6: displayed 32x64, RED on top."""
    return jpeg_with_exif(half_and_half(), tiff_orientation(6))
