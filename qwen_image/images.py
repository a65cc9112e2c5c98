"""Image input, in one place for the UI, the API and the CLI.

``open_image`` accepts a path, bytes, a file object or a PIL image and returns a checked, fully loaded RGB or RGBA
image, or raises ``ImageInputError`` naming the problem: unsupported or unknown format, empty, truncated or corrupt
file, decompression bomb, zero size, too small, too elongated.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

from .requests import ValidationError

MAX_PIXELS = 40_000_000
MAX_ASPECT = 8.0
MIN_SIDE = 8
MAX_FILE_BYTES = 50 * 1024**2
ALLOWED_FORMATS = {"PNG", "JPEG", "MPO", "WEBP", "BMP", "GIF", "TIFF"}
FORMAT_NAMES = "PNG, JPEG, WebP, BMP, GIF or TIFF"


class ImageInputError(ValidationError):
    """An uploaded image that cannot be used; the message names the problem."""


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
    stripped = head.lstrip()[:256].lower()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in head.lower()):
        return "svg"
    if head[4:12] in (b"ftypheic", b"ftypheix", b"ftypmif1", b"ftyphevc", b"ftypavif"):
        return "avif" if head[4:12] == b"ftypavif" else "heic"
    if stripped.startswith(b"%pdf"):
        return "pdf"
    return None


def _read(source) -> tuple[bytes | None, str]:
    """Bytes of the source (None for a PIL image) and a name for messages."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return None, "image"
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "upload"
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageInputError(f"{path.name}: the file does not exist.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ImageInputError(f"{path.name}: the file is larger than {MAX_FILE_BYTES // 1024**2} MB.")
        return path.read_bytes(), path.name
    if hasattr(source, "read"):
        data = source.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ImageInputError(f"the file is larger than {MAX_FILE_BYTES // 1024**2} MB.")
        return data, getattr(source, "name", "upload")
    raise ImageInputError("not an image.")


def open_image(source, keep_alpha: bool = False, name: str | None = None):
    """Open, check and normalise an image. RGBA is kept only when ``keep_alpha`` and the alpha is not all opaque."""
    from PIL import Image, ImageFile

    ImageFile.LOAD_TRUNCATED_IMAGES = False
    data, label = _read(source)
    label = name or label
    if data is not None:
        if not data:
            raise ImageInputError(f"{label}: the file is empty (0 bytes).")
        kind = _sniff(data[:512])
        if kind == "svg":
            raise ImageInputError(f"{label}: SVG vector images are not supported; export it as PNG first.")
        if kind in ("heic", "avif") and not _heif_available():
            raise ImageInputError(
                f"{label}: {kind.upper()} images are not supported here; convert it to PNG or JPEG "
                "(or install pillow-heif)."
            )
        if kind == "pdf":
            raise ImageInputError(f"{label}: PDF files are not images; export the page as PNG first.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = source if data is None else Image.open(io.BytesIO(data))
            fmt = (im.format or "PNG").upper() if data is not None else "PNG"
            if data is not None and fmt not in ALLOWED_FORMATS:
                raise ImageInputError(f"{label}: {fmt} images are not supported; use {FORMAT_NAMES}.")
            _check_size(im.width, im.height, label)
            if getattr(im, "n_frames", 1) > 1:
                im.seek(0)  # animations: the first frame
            im.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageInputError(f"{label}: the image is too large (limit {MAX_PIXELS // 1_000_000} megapixels).") from None
    except Image.UnidentifiedImageError:
        raise ImageInputError(f"{label}: not an image, or not a format we read ({FORMAT_NAMES}).") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc).lower()
        if "truncated" in text or isinstance(exc, EOFError):
            raise ImageInputError(f"{label}: the image file is truncated (incomplete download?).") from None
        raise ImageInputError(f"{label}: the image file is corrupt and cannot be decoded.") from None
    return normalise(im, keep_alpha, label)


def _check_size(width: int, height: int, label: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageInputError(f"{label}: the image has zero size.")
    if width * height > MAX_PIXELS:
        raise ImageInputError(
            f"{label}: the image is too large ({width}x{height}, {width * height / 1e6:.0f} megapixels; "
            f"limit {MAX_PIXELS // 1_000_000})."
        )
    if min(width, height) < MIN_SIDE:
        raise ImageInputError(f"{label}: the image is too small ({width}x{height}; at least {MIN_SIDE} pixels a side).")
    if max(width / height, height / width) > MAX_ASPECT:
        raise ImageInputError(
            f"{label}: the aspect ratio {width}x{height} is too extreme (at most 1:{MAX_ASPECT:g})."
        )


def normalise(im, keep_alpha: bool = False, label: str = "image"):
    """EXIF orientation applied; any mode converted to RGB, or RGBA when alpha is kept and meaningful."""
    from PIL import Image, ImageOps

    try:
        im = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not reject an otherwise good image
        pass
    _check_size(im.width, im.height, label)
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        im = _to_8bit(im)
        mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif mode == "CMYK":
        im = im.convert("RGB")
    elif mode not in ("RGB", "RGBA"):
        im = im.convert("RGB")
    if im.mode == "RGBA":
        opaque = im.getchannel("A").getextrema()[0] == 255
        if keep_alpha and not opaque:
            return im
        if opaque:
            return im.convert("RGB")
        white = Image.new("RGB", im.size, (255, 255, 255))
        white.paste(im.convert("RGB"), mask=im.getchannel("A"))
        return white
    return im


def _to_8bit(im):
    """16-bit integer images scaled by 1/257; float images from [0, 1] (or their range when outside it)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(im, dtype=np.float64)
    if im.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = arr * 255.0 if lo >= 0.0 and hi <= 1.0 else (arr - lo) * (255.0 / (hi - lo) if hi > lo else 0.0)
    else:
        arr = arr / 257.0
    out = np.nan_to_num(arr).clip(0, 255).round().astype(np.uint8)
    return Image.fromarray(out, mode="L").convert("RGB")
