"""A bad-input corpus for ``qwen_image.images.open_image``, generated here (no binary fixtures).

Every corpus case runs from bytes, from a path and from a file object: bad inputs must raise ``ImageInputError`` (a
``ValidationError``) whose message names the problem; good ones must come back as the exact normalised image.
"""

from __future__ import annotations

import functools
import io
import random
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from PIL import Image, ImageFile

from qwen_image import images
from qwen_image.generation import ValidationError
from qwen_image.images import ImageInputError, normalise, open_image

try:
    import pillow_heif  # noqa: F401

    HAVE_HEIF = True
except ImportError:
    HAVE_HEIF = False

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


# --- builders -------------------------------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height RGB, with a few bytes of pixel data: a bomb costs nothing to make."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def noise(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def two_colour(width: int, height: int, mode: str, left, right) -> Image.Image:
    im = Image.new(mode, (width, height), left)
    im.paste(right, (width // 2, 0, width, height))
    return im


def frames_of(*colours, size=(16, 16)) -> list[Image.Image]:
    return [Image.new("RGB", size, c) for c in colours]


def animated(fmt: str, **kw) -> bytes:
    first, *rest = frames_of(RED, GREEN, BLUE)
    return encode(first, fmt, save_all=True, append_images=rest, duration=100, **kw)


def palette_with_transparency(fmt: str) -> bytes:
    """A 16x16 palette image: index 0 (transparent) on the left half, index 1 (red) on the right."""
    im = Image.new("P", (16, 16), 0)
    im.putpalette([0, 0, 0, 255, 0, 0] + [0] * (254 * 3))
    im.paste(1, (8, 0, 16, 16))
    return encode(im, fmt, transparency=0)


def rgba_half_transparent() -> Image.Image:
    im = Image.new("RGBA", (16, 16), (0, 0, 255, 255))
    im.paste((0, 0, 0, 0), (0, 0, 8, 16))
    return im


def exif_rotated() -> bytes:
    """40x20 white with a red 10x10 top-left corner, stored with EXIF Orientation=6 (display turned 90° clockwise)."""
    im = Image.new("RGB", (40, 20), WHITE)
    im.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(im, "JPEG", exif=exif.tobytes(), quality=95)


def exif_corrupt() -> bytes:
    im = Image.new("RGB", (40, 20), (10, 200, 30))
    bad = b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\x00\x05\x01\x12\x00\x03\xff\xff\xff\xff"
    return encode(im, "JPEG", exif=bad, quality=95)


def gradient16() -> bytes:
    row = np.arange(64, dtype=np.uint16) * 1000  # 0 .. 63000
    return encode(Image.fromarray(np.repeat(row[None, :], 8, axis=0)), "PNG")


def gradient(mode: str) -> Image.Image:
    if mode == "F":
        row = np.linspace(0.0, 1.0, 32, dtype=np.float32)
    elif mode == "I":
        row = np.arange(32, dtype=np.int32) * 2000  # 0 .. 62000: 16-bit range
    else:
        row = np.arange(32, dtype=np.uint8) * 8
    return Image.fromarray(np.repeat(row[None, :], 16, axis=0))


def ihdr_size(width: int, height: int, mode: str = "RGB") -> bytes:
    return encode(Image.new(mode, (width, height), (30, 60, 90) if mode == "RGB" else 0), "PNG")


# --- checks for the accepted cases -------------------------------------------------------------------------------


def near(pixel, colour, tol: int = 40) -> bool:
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(pixel, colour, strict=False))


def is_rgb(size: tuple[int, int]) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        assert (im.mode, im.size) == ("RGB", size)

    return check


def exact(expected: Image.Image) -> Callable[[Image.Image], None]:
    def check(im: Image.Image) -> None:
        assert (im.mode, im.size) == (expected.mode, expected.size)
        assert np.array_equal(np.asarray(im), np.asarray(expected))

    return check


def check_cmyk(im):
    assert (im.mode, im.size) == ("RGB", (32, 16))
    assert near(im.getpixel((4, 8)), RED), im.getpixel((4, 8))
    assert near(im.getpixel((28, 8)), BLUE), im.getpixel((28, 8))


def check_gradient16(im):
    assert (im.mode, im.size) == ("RGB", (64, 8))
    row = np.asarray(im)[4, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == round(63000 / 257)
    assert np.all(np.diff(row) > 0)  # strictly increasing: no clipping, no banding to one value
    assert np.array_equal(np.asarray(im)[..., 0], np.asarray(im)[..., 2])  # grey


def first_frame(size=(16, 16)):
    def check(im):
        assert (im.mode, im.size) == ("RGB", size)
        assert near(im.getpixel((8, 8)), RED, tol=2)
        assert not hasattr(im, "n_frames") or im.n_frames == 1

    return check


def check_palette_alpha(im):
    assert (im.mode, im.size) == ("RGBA", (16, 16))
    assert im.getpixel((2, 2))[3] == 0
    assert im.getpixel((12, 2)) == (255, 0, 0, 255)


def check_flattened(left=WHITE, right=RED, size=(16, 16)):
    def check(im):
        assert (im.mode, im.size) == ("RGB", size)
        assert im.getpixel((2, 2)) == left  # the transparent half became white
        assert im.getpixel((size[0] - 2, 2)) == right

    return check


def check_la_kept(im):
    assert (im.mode, im.size) == ("RGBA", (16, 16))
    assert im.getpixel((2, 2))[3] == 0
    assert im.getpixel((12, 2)) == (100, 100, 100, 255)


def check_rgba_kept(im):
    assert (im.mode, im.size) == ("RGBA", (16, 16))
    assert im.getpixel((2, 2))[3] == 0
    assert im.getpixel((12, 2)) == (0, 0, 255, 255)


def check_exif_rotated(im):
    assert (im.mode, im.size) == ("RGB", (20, 40))  # turned upright
    assert near(im.getpixel((16, 3)), RED), im.getpixel((16, 3))  # the top-left corner is now top-right
    assert near(im.getpixel((3, 3)), WHITE), im.getpixel((3, 3))
    assert near(im.getpixel((16, 36)), WHITE), im.getpixel((16, 36))


def check_exif_corrupt(im):
    assert (im.mode, im.size) == ("RGB", (40, 20))
    assert near(im.getpixel((20, 10)), (10, 200, 30))


def check_grey_gradient(size):
    def check(im):
        assert (im.mode, im.size) == ("RGB", size)
        row = np.asarray(im)[size[1] // 2, :, 0].astype(int)
        assert row[0] == 0 and row[-1] >= 240, row
        assert np.all(np.diff(row) >= 0) and np.diff(row).sum() > 0

    return check


def check_bilevel(im):
    assert (im.mode, im.size) == ("RGB", (16, 16))
    assert im.getpixel((2, 2)) == (0, 0, 0) and im.getpixel((12, 2)) == WHITE


# --- the corpus -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[], bytes]
    suffix: str = ".png"
    error: tuple[str, ...] = ()  # substrings the message must contain; empty: the image is accepted
    check: Callable[[Image.Image], None] | None = None
    keep_alpha: bool = False


def bad(id, make, suffix, *error, keep_alpha=False):
    return Case(id, make, suffix, tuple(error), keep_alpha=keep_alpha)


def good(id, make, suffix, check, keep_alpha=False):
    return Case(id, make, suffix, (), check, keep_alpha)


_png = functools.cache(lambda: encode(noise(96, 64), "PNG"))
_jpeg = functools.cache(lambda: encode(noise(96, 64, seed=1), "JPEG", quality=90))
_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
_AVIF = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + b"\x00" * 64


def _corrupt_png() -> bytes:
    data = bytearray(_png())
    start = data.find(b"IDAT") + 24
    for i in range(start, start + 64):
        data[i] ^= 0xA5
    return bytes(data)


def _one_bit_bomb() -> bytes:
    """A real 7000x6000 bilevel PNG: 42 megapixels, a few kilobytes on disk."""
    return encode(Image.new("1", (7000, 6000), 0), "PNG")


CASES = [
    # decompression bombs: the size comes from the header and is refused before any pixel is decoded
    bad("bomb-header-20000x20000", lambda: png_header_only(20000, 20000), ".png", "too large", "megapixels"),
    bad("bomb-header-10000x10000", lambda: png_header_only(10000, 10000), ".png", "too large", "megapixels"),
    bad("bomb-header-8000x8000", lambda: png_header_only(8000, 8000), ".png", "too large", "8000x8000", "megapixels"),
    bad("bomb-1bit-42mp", functools.cache(_one_bit_bomb), ".png", "too large", "7000x6000", "megapixels"),
    # broken files
    bad("truncated-png", lambda: _png()[: len(_png()) // 2], ".png", "truncated"),
    bad("truncated-jpeg", lambda: _jpeg()[: len(_jpeg()) // 2], ".jpg", "truncated"),
    bad("truncated-jpeg-header", lambda: _jpeg()[:200], ".jpg", "truncated"),
    bad("corrupt-png-data", _corrupt_png, ".png", "corrupt"),
    bad("empty", lambda: b"", ".png", "empty"),
    bad("text-renamed-png", lambda: b"hello, this is a shopping list, not a picture\n" * 20, ".png", "not an image"),
    bad("random-bytes", lambda: random.Random(1234).randbytes(4096), ".jpg", "not an image"),
    # formats we recognise only to say why they are refused
    bad("svg", lambda: _SVG, ".svg", "SVG"),
    bad("svg-xml-prolog", lambda: b'<?xml version="1.0" encoding="UTF-8"?>\n' + _SVG, ".svg", "SVG"),
    bad("svg-bom-doctype", lambda: b"\xef\xbb\xbf<!DOCTYPE svg>\n" + _SVG, ".svg", "SVG"),
    bad("pdf", lambda: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< >>\nendobj\n", ".pdf", "PDF"),
    bad("avif-box", lambda: _AVIF, ".avif", "AVIF", "not supported"),
    # formats Pillow reads but the app does not take
    bad("ico", lambda: encode(noise(32, 32), "ICO"), ".ico", "ICO", "not supported"),
    bad("pcx", lambda: encode(noise(32, 32), "PCX"), ".pcx", "PCX", "not supported"),
    bad("tga", lambda: encode(noise(32, 32), "TGA"), ".tga", "TGA", "not supported"),
    bad("ppm", lambda: encode(noise(32, 32), "PPM"), ".ppm", "PPM", "not supported"),
    # shapes
    bad("strip-1x2000", lambda: ihdr_size(1, 2000), ".png", "aspect ratio", "1x2000"),
    bad("strip-2000x1", lambda: ihdr_size(2000, 1), ".png", "aspect ratio", "2000x1"),
    bad("elongated-3000x200", lambda: ihdr_size(3000, 200), ".png", "aspect ratio", "1:8"),
    bad("tiny-4x4", lambda: ihdr_size(4, 4), ".png", "too small", "4x4"),
    bad("tiny-7x40", lambda: ihdr_size(7, 40), ".png", "too small"),
    good("exactly-1:8-800x100", lambda: ihdr_size(800, 100), ".png", is_rgb((800, 100))),
    good("exactly-8:1-100x800-grey", lambda: ihdr_size(100, 800, "L"), ".png", is_rgb((100, 800))),
    # colour modes and depths
    good(
        "cmyk-jpeg",
        lambda: encode(two_colour(32, 16, "CMYK", (0, 255, 255, 0), (255, 255, 0, 0)), "JPEG"),
        ".jpg",
        check_cmyk,
    ),  # fmt: skip
    good("png-16bit-gradient", gradient16, ".png", check_gradient16),
    good("mode-1-png", lambda: encode(two_colour(16, 16, "1", 0, 1), "PNG"), ".png", check_bilevel),
    good("mode-L-png", lambda: encode(gradient("L"), "PNG"), ".png", check_grey_gradient((32, 16))),
    good("mode-I-tiff", lambda: encode(gradient("I"), "TIFF"), ".tif", check_grey_gradient((32, 16))),
    good("mode-F-tiff", lambda: encode(gradient("F"), "TIFF"), ".tif", check_grey_gradient((32, 16))),
    # animations: the first frame
    good("gif-animated", lambda: animated("GIF"), ".gif", first_frame()),
    good("webp-animated", lambda: animated("WEBP", lossless=True), ".webp", first_frame()),
    good("apng", lambda: animated("PNG"), ".png", first_frame()),
    # transparency
    good("png-palette-trns-keep", lambda: palette_with_transparency("PNG"), ".png", check_palette_alpha, True),
    good("png-palette-trns-flatten", lambda: palette_with_transparency("PNG"), ".png", check_flattened()),
    good("gif-transparency-keep", lambda: palette_with_transparency("GIF"), ".gif", check_palette_alpha, True),
    good("gif-transparency-flatten", lambda: palette_with_transparency("GIF"), ".gif", check_flattened()),
    good(
        "png-LA-keep", lambda: encode(two_colour(16, 16, "LA", (0, 0), (100, 255)), "PNG"), ".png", check_la_kept, True
    ),  # fmt: skip
    good(
        "png-LA-flatten",
        lambda: encode(two_colour(16, 16, "LA", (0, 0), (100, 255)), "PNG"),
        ".png",
        check_flattened(right=(100, 100, 100)),
    ),  # fmt: skip
    good(
        "png-RGBA-opaque",
        lambda: encode(Image.new("RGBA", (16, 16), (9, 8, 7, 255)), "PNG"),
        ".png",
        exact(Image.new("RGB", (16, 16), (9, 8, 7))),
        True,
    ),  # fmt: skip
    good("png-RGBA-alpha-keep", lambda: encode(rgba_half_transparent(), "PNG"), ".png", check_rgba_kept, True),
    good("png-RGBA-alpha-flatten", lambda: encode(rgba_half_transparent(), "PNG"), ".png", check_flattened(right=BLUE)),
    # EXIF
    good("jpeg-exif-orientation-6", exif_rotated, ".jpg", check_exif_rotated),
    good("jpeg-exif-corrupt", exif_corrupt, ".jpg", check_exif_corrupt),
    # plain formats we accept, pixel for pixel where lossless
    good("png", _png, ".png", exact(noise(96, 64))),
    good("bmp", lambda: encode(noise(40, 24, seed=2), "BMP"), ".bmp", exact(noise(40, 24, seed=2))),
    good("tiff", lambda: encode(noise(40, 24, seed=3), "TIFF"), ".tiff", exact(noise(40, 24, seed=3))),
    good(
        "webp-lossless",
        lambda: encode(noise(40, 24, seed=4), "WEBP", lossless=True),
        ".webp",
        exact(noise(40, 24, seed=4)),
    ),  # fmt: skip
    good("jpeg", _jpeg, ".jpg", is_rgb((96, 64))),
]
if HAVE_HEIF:  # pillow-heif reads real HEIC; a box with no image in it is then merely corrupt
    CASES.append(bad("heic-box", lambda: _HEIC, ".heic", "image"))
else:
    CASES.append(bad("heic-box", lambda: _HEIC, ".heic", "HEIC", "not supported", "pillow-heif"))

KINDS = ("bytes", "path", "file")


def as_source(kind: str, data: bytes, suffix: str, tmp_path):
    if kind == "bytes":
        return data, "upload"
    if kind == "file":
        return io.BytesIO(data), "upload"
    path = tmp_path / f"input{suffix}"
    path.write_bytes(data)
    return path, path.name


def test_corpus_is_big_enough():
    assert len(CASES) >= 22
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_corpus(case: Case, kind: str, tmp_path):
    source, label = as_source(kind, case.make(), case.suffix, tmp_path)
    if case.error:
        with pytest.raises(ImageInputError) as err:
            open_image(source, keep_alpha=case.keep_alpha)
        message = str(err.value)
        assert isinstance(err.value, ValidationError) and err.value.field == "images"
        assert message.startswith(f"{label}: "), message
        for part in case.error:
            assert part.lower() in message.lower(), message
        return
    im = open_image(source, keep_alpha=case.keep_alpha)
    assert im.mode in ("RGB", "RGBA")
    im.getpixel((0, 0))  # fully loaded: no file behind it
    case.check(im)


# --- sources and limits ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_file_larger_than_limit(kind, tmp_path, monkeypatch):
    data = encode(noise(64, 64), "PNG")  # ~12 kB of noise
    monkeypatch.setattr(images, "MAX_FILE_BYTES", 4096)
    source, label = as_source(kind, data, ".png", tmp_path)
    with pytest.raises(ImageInputError, match="larger than") as err:
        open_image(source)
    assert str(err.value).startswith(f"{label}: ")
    monkeypatch.setattr(images, "MAX_FILE_BYTES", len(data))  # exactly at the limit is fine
    source, _ = as_source(kind, data, ".png", tmp_path)
    assert open_image(source).size == (64, 64)


def test_missing_path(tmp_path):
    with pytest.raises(ImageInputError, match="does not exist") as err:
        open_image(tmp_path / "nowhere.png")
    assert str(err.value).startswith("nowhere.png: ")
    with pytest.raises(ImageInputError, match="does not exist"):
        open_image(str(tmp_path / "nowhere.png"))


def test_folder_is_not_a_file(tmp_path):
    with pytest.raises(ImageInputError, match="not a file"):
        open_image(tmp_path)


@pytest.mark.parametrize("path", ["x" * 5000 + ".png", "bad\0name.png"])
def test_unusable_path_names(path):
    with pytest.raises(ImageInputError):
        open_image(path)


def test_name_overrides_label():
    with pytest.raises(ImageInputError, match=r"^holiday\.png: the file is empty"):
        open_image(b"", name="holiday.png")


def test_file_object_label_is_base_name(tmp_path):
    path = tmp_path / "cat.txt"
    path.write_bytes(b"meow " * 50)
    with open(path, "rb") as f, pytest.raises(ImageInputError, match=r"^cat\.txt: not an image"):
        open_image(f)


def test_text_mode_file_object(tmp_path):
    path = tmp_path / "photo.png"
    path.write_text("not binary")
    with open(path) as f, pytest.raises(ImageInputError, match="binary mode"):
        open_image(f)


def test_bytearray_and_memoryview():
    data = encode(noise(16, 16), "PNG")
    assert open_image(bytearray(data)).size == (16, 16)
    assert open_image(memoryview(data)).size == (16, 16)


@pytest.mark.parametrize("source", [None, 42, 3.5, ["a.png"], {"path": "a.png"}])
def test_not_an_image_source(source):
    with pytest.raises(ImageInputError, match="not an image"):
        open_image(source)


# --- decompression bombs --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [20000, 10000, 8000])
def test_bomb_rejected_before_decoding(side, monkeypatch):
    """Refused from the header: ImageFile.load (the pixel decoding) is never reached."""
    loads = []
    original = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self) or original(self))
    with pytest.raises(ImageInputError, match="too large"):
        open_image(png_header_only(side, side))
    assert loads == []


@pytest.mark.parametrize(
    ("pillow_limit", "side"),
    [(1000, 40), (1000, 50)],  # 1600 px: Pillow warns (1x its limit); 2500 px: Pillow raises (2x)
    ids=["pillow-warning", "pillow-error"],
)
def test_pillow_bomb_guard_mapped(pillow_limit, side, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pillow_limit)
    with pytest.raises(ImageInputError, match=r"too large \(0\.0016|too large \(0\.0025") as err:
        open_image(encode(noise(side, side), "PNG"))
    assert "limit is 0.001 megapixels" in str(err.value)


def test_bomb_warning_does_not_leak(recwarn):
    with pytest.raises(ImageInputError, match="too large"):
        open_image(png_header_only(10000, 10000))
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_exactly_max_pixels_passes_the_size_check(monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 64 * 32)
    assert open_image(encode(noise(64, 32), "PNG")).size == (64, 32)
    with pytest.raises(ImageInputError, match="too large"):
        open_image(encode(noise(65, 32), "PNG"))


# --- PIL images as the source ---------------------------------------------------------------------------------------


def test_pil_image_from_unsupported_format_is_refused():
    ico = Image.open(io.BytesIO(encode(noise(32, 32), "ICO")))
    with pytest.raises(ImageInputError, match="ICO images are not supported"):
        open_image(ico)


def test_pil_image_made_in_memory_is_accepted():
    im = noise(32, 32)
    out = open_image(im)
    assert out is not im and np.array_equal(np.asarray(out), np.asarray(im))


def test_pil_image_truncated_lazily():
    im = Image.open(io.BytesIO(_png()[: len(_png()) // 2]))  # opened, not yet decoded
    with pytest.raises(ImageInputError, match="truncated"):
        open_image(im)


@pytest.mark.parametrize(("size", "message"), [((1, 2000), "aspect ratio"), ((5, 5), "too small"), ((0, 5), "zero")])
def test_pil_image_shapes(size, message):
    with pytest.raises(ImageInputError, match=message):
        open_image(Image.new("RGB", size))


def test_pil_premultiplied_la():
    la = Image.new("LA", (16, 16), (0, 0))
    la.paste((100, 255), (8, 0, 16, 16))
    premultiplied = la.convert("La")
    assert open_image(premultiplied, keep_alpha=True).getpixel((12, 2)) == (100, 100, 100, 255)
    assert open_image(premultiplied).getpixel((2, 2)) == WHITE


def test_pil_rgb_colour_key_transparency():
    im = Image.new("RGB", (16, 16), (0, 0, 0))
    im.paste(RED, (8, 0, 16, 16))
    im.info["transparency"] = (0, 0, 0)
    assert open_image(im, keep_alpha=True).getpixel((2, 2))[3] == 0
    assert open_image(im).getpixel((2, 2)) == WHITE


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0, 128, 255], [0, 128, 255]),  # mode I holding 8-bit values stays as it is
        ([0, 32896, 65535], [0, 128, 255]),  # 16-bit range: / 257
        ([-1000, 0, 1000], [0, 128, 255]),  # anything else: stretched over its range
    ],
)
def test_mode_i_ranges(values, expected):
    im = Image.fromarray(np.repeat(np.array(values, dtype=np.int32)[None, :], 8, axis=0))
    im = im.resize((24, 8), Image.Resampling.NEAREST)
    assert im.mode == "I"
    out = normalise(im)
    assert [out.getpixel((x, 0))[0] for x in (0, 12, 23)] == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([0.0, 0.5, 1.0], [0, 128, 255]),
        ([0.0, 128.0, 255.0], [0, 128, 255]),
        ([-1.0, 0.0, 1.0], [0, 128, 255]),
        ([float("nan"), float("inf"), float("-inf")], [0, 255, 0]),
    ],
)
def test_mode_f_ranges(values, expected):
    im = Image.fromarray(np.repeat(np.array(values, dtype=np.float32)[None, :], 8, axis=0))
    im = im.resize((24, 8), Image.Resampling.NEAREST)
    assert im.mode == "F"
    out = normalise(im)
    assert [out.getpixel((x, 0))[0] for x in (0, 12, 23)] == expected


@pytest.mark.parametrize("mode", ["1", "L", "P", "I", "F", "I;16", "LA", "PA", "La", "RGBa", "RGBX", "CMYK", "YCbCr",
                                  "LAB", "HSV"])  # fmt: skip
def test_every_mode_normalises(mode):
    out = normalise(Image.new(mode, (16, 16)))
    assert out.mode in ("RGB", "RGBA") and out.size == (16, 16)


def test_animated_pil_image_keeps_its_frame():
    gif = Image.open(io.BytesIO(animated("GIF")))
    assert near(open_image(gif).getpixel((8, 8)), RED, tol=2)
    gif.seek(1)
    assert near(open_image(gif).getpixel((8, 8)), GREEN, tol=2)


def test_truncated_images_stay_errors_even_if_enabled_elsewhere(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ImageInputError, match="truncated"):
        open_image(_png()[: len(_png()) // 2])
