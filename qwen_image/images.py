"""Image input, in one place for the UI, the API and the CLI.

``open_image`` accepts a path, bytes, a file object or a PIL image and returns a checked, fully loaded RGB or RGBA
image, or raises ``ImageInputError`` naming the problem: unsupported or unknown format, empty, truncated or corrupt
file, decompression bomb, zero size, too small, too elongated.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from pathlib import Path

from .generation import ValidationError

MAX_PIXELS = 40_000_000
MAX_ASPECT = 8.0
MIN_SIDE = 8
MAX_FILE_BYTES = 50 * 1024**2
ALLOWED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"}
FORMAT_NAMES = "PNG, JPEG, WebP, BMP, GIF or TIFF"
_SNIFF_BYTES = 4096
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
_AVIF_BRANDS = {b"avif", b"avis"}


class ImageInputError(ValidationError):
    """An uploaded image that cannot be used; the message names the problem."""

    def __init__(self, message: str, field: str | None = "images"):
        super().__init__(message, field)


def _heif_available() -> bool:
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        ALLOWED_FORMATS.add("HEIF")
        return True
    except Exception:
        return False


def _sniff(head: bytes) -> str | None:
    """Formats we recognise by their first bytes only to give a better message."""
    text = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    if text.startswith(b"<svg") or (text.startswith((b"<?xml", b"<!doctype svg", b"<!--")) and b"<svg" in text):
        return "svg"
    if head[4:8] == b"ftyp":
        if head[8:12] in _AVIF_BRANDS:
            return "avif"
        if head[8:12] in _HEIF_BRANDS:
            return "heic"
    if text.startswith(b"%pdf"):
        return "pdf"
    return None


def _too_big(label: str) -> ImageInputError:
    return ImageInputError(f"{label}: the file is larger than {MAX_FILE_BYTES / 1024**2:g} MB.")


def _read(source, name: str | None) -> tuple[bytes | None, str]:
    """Bytes of the source (None for a PIL image) and a name for messages."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return None, name or "image"
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "upload"
        if (source.nbytes if isinstance(source, memoryview) else len(source)) > MAX_FILE_BYTES:
            raise _too_big(label)
        return bytes(source), label
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or (path.name or str(source))[:120]
        try:
            if not path.exists():
                raise ImageInputError(f"{label}: the file does not exist.")
            if not path.is_file():
                raise ImageInputError(f"{label}: not a file (a folder or a device?).")
            if path.stat().st_size > MAX_FILE_BYTES:
                raise _too_big(label)
            return path.read_bytes(), label
        except ImageInputError:
            raise
        except (OSError, ValueError) as exc:  # unreadable, permission denied, name too long, NUL in the name
            raise ImageInputError(f"{label}: the file cannot be read ({type(exc).__name__}).") from None
    if hasattr(source, "read"):
        raw = getattr(source, "name", None)
        label = name or (os.path.basename(raw) if isinstance(raw, str) and raw else "upload")
        try:
            data = source.read(MAX_FILE_BYTES + 1)
        except Exception as exc:
            raise ImageInputError(f"{label}: the file cannot be read ({type(exc).__name__}).") from None
        if not isinstance(data, (bytes, bytearray)):
            raise ImageInputError(f"{label}: the file was opened as text; open it in binary mode ('rb').")
        if len(data) > MAX_FILE_BYTES:
            raise _too_big(label)
        return bytes(data), label
    raise ImageInputError(f"{name or 'input'}: not an image ({type(source).__name__}).")


def _bomb_message(label: str, exc: Exception) -> str:
    """Pillow's own decompression-bomb guard (Image.MAX_IMAGE_PIXELS), in our words."""
    from PIL import Image

    found = re.search(r"\((\d+) pixels\)", str(exc))
    size = f" ({int(found.group(1)) / 1e6:.3g} megapixels)" if found else ""
    limit = min(MAX_PIXELS, Image.MAX_IMAGE_PIXELS or MAX_PIXELS)
    return f"{label}: the image is too large{size}; the limit is {limit / 1e6:.3g} megapixels."


def open_image(source, keep_alpha: bool = False, name: str | None = None):
    """Open, check and normalise an image. RGBA is kept only when ``keep_alpha`` and the alpha is not all opaque.

    Animated images (GIF, WebP, APNG, MPO, multi-page TIFF) give their first frame; for a PIL image the frame it is
    on. The size is checked from the header, before any pixel is decoded.
    """
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never grey-padded pixels
    data, label = _read(source, name)
    if data is not None:
        if not data:
            raise ImageInputError(f"{label}: the file is empty (0 bytes).")
        kind = _sniff(data[:_SNIFF_BYTES])
        if kind == "svg":
            raise ImageInputError(f"{label}: SVG vector images are not supported; export it as PNG first.")
        if kind == "heic" and not _heif_available():
            raise ImageInputError(
                f"{label}: HEIC/HEIF images are not supported here; convert it to PNG or JPEG (or install pillow-heif)."
            )
        if kind == "avif":
            raise ImageInputError(f"{label}: AVIF images are not supported; convert it to PNG or JPEG.")
        if kind == "pdf":
            raise ImageInputError(f"{label}: PDF files are not images; export the page as PNG first.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # e.g. Pillow's "Corrupt EXIF data": not the user's problem
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = source if data is None else Image.open(io.BytesIO(data))
            # A PIL image opened from a file still carries its format; one made in memory has none.
            fmt = (im.format or "").upper()
            if fmt and fmt not in ALLOWED_FORMATS:
                raise ImageInputError(f"{label}: {fmt} images are not supported; use {FORMAT_NAMES}.")
            _check_size(im.width, im.height, label)  # from the header: before a single pixel is decoded
            im.load()
        return normalise(im, keep_alpha, label)
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(_bomb_message(label, exc)) from None
    except Image.UnidentifiedImageError:
        raise ImageInputError(f"{label}: not an image, or not a format we read ({FORMAT_NAMES}).") from None
    except MemoryError:
        raise ImageInputError(f"{label}: the image needs more memory than is available to decode.") from None
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error...
        if isinstance(exc, EOFError) or "truncated" in str(exc).lower():
            raise ImageInputError(f"{label}: the image file is truncated (incomplete download?).") from None
        raise ImageInputError(f"{label}: the image file is corrupt and cannot be decoded.") from None


def _check_size(width: int, height: int, label: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageInputError(f"{label}: the image has zero size ({width}x{height}).")
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"{label}: the image is too large ({width}x{height}, {width * height / 1e6:.3g} megapixels; "
            f"the limit is {MAX_PIXELS / 1e6:.3g} megapixels)."
        )
    # Before "too small": a 1x2000 strip is first of all too elongated.
    if max(width / height, height / width) > MAX_ASPECT:
        raise ImageInputError(f"{label}: the aspect ratio {width}x{height} is too extreme (at most 1:{MAX_ASPECT:g}).")
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(f"{label}: the image is too small ({width}x{height}; at least {MIN_SIDE} pixels a side).")


def normalise(im, keep_alpha: bool = False, label: str = "image"):
    """EXIF orientation applied; any mode converted to RGB, or RGBA when alpha is kept and meaningful.

    Transparent pixels are flattened onto white when the alpha is not kept. Always returns a new image.
    """
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # Pillow's "Corrupt EXIF data"
            im = ImageOps.exif_transpose(im)  # a copy even when there is nothing to turn
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        im = im.copy()
    _check_size(im.width, im.height, label)
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = _to_8bit(im)
    try:
        if im.mode == "La":
            im = im.convert("LA")  # Pillow has no direct La -> RGBA conversion
        if im.mode not in ("RGB", "RGBA"):
            has_alpha = "A" in im.getbands() or "a" in im.getbands() or im.has_transparency_data
            im = im.convert("RGBA" if has_alpha else "RGB")
        elif im.mode == "RGB" and im.has_transparency_data:  # a PNG colour key (tRNS)
            im = im.convert("RGBA")
    except ValueError:
        raise ImageInputError(f"{label}: the colour mode {im.mode} is not supported; save it as RGB.") from None
    return settle_alpha(im, keep_alpha)


def settle_alpha(im, keep_alpha: bool):
    """An RGBA image stays RGBA only when asked and when its alpha matters: fully opaque becomes RGB, and without
    ``keep_alpha`` its transparent pixels are flattened onto white. Other modes pass through."""
    from PIL import Image

    if im.mode != "RGBA":
        return im
    alpha = im.getchannel("A")
    if alpha.getextrema()[0] == 255:
        return im.convert("RGB")
    if keep_alpha:
        return im
    white = Image.new("RGB", im.size, (255, 255, 255))
    white.paste(im.convert("RGB"), mask=alpha)
    return white


def _to_8bit(im):
    """High bit depth to 8-bit grey RGB.

    I;16: scaled by 1/257. I: as 8-bit when its values fit 0..255, by 1/257 when they fit 0..65535, else stretched
    over its range. F: from [0, 1], as 8-bit when within 0..255, else stretched. NaN becomes black.
    """
    import numpy as np
    from PIL import Image

    arr = np.asarray(im, dtype=np.float64)
    finite = arr[np.isfinite(arr)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        if im.mode.startswith("I;16"):
            arr = arr / 257.0
        elif lo >= 0.0 and hi <= 1.0 and im.mode == "F":
            arr = arr * 255.0
        elif lo >= 0.0 and hi <= 255.0:
            pass
        elif lo >= 0.0 and hi <= 65535.0 and im.mode == "I":
            arr = arr / 257.0
        else:
            arr = (arr - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
        out = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(out)  # 2-D uint8: mode L.convert("RGB")
