"""Files the browser is given: small previews for the conversation and full-resolution PNG downloads.

They are written to the app's own output folder ("outbox"), the only folder Gradio may serve from besides its
cache; the stored images themselves are never served by path.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import re
import shutil
import time
import unicodedata
from pathlib import Path
from urllib.parse import quote

from qwen_image.atomic import atomic_copy, atomic_write

PREVIEW_SIDE = 768
THUMB_SIDE = 160
SLUG_MAX = 48
log = logging.getLogger(__name__)


def slug(text: str, limit: int = SLUG_MAX) -> str:
    """A file-name-safe short form of a prompt: letters and digits of any script, words joined by hyphens."""
    text = unicodedata.normalize("NFKC", str(text or "")).casefold()
    words = re.findall(r"\w+", text)
    out = ""
    for word in words:
        word = word.replace("_", "")
        if not word:
            continue
        nxt = f"{out}-{word}" if out else word
        if len(nxt) > limit:
            break
        out = nxt
    return out or (words[0][:limit] if words else "")


def file_name(prompt: str, seed, index: int | None = None) -> str:
    """The name a downloaded result gets: the prompt's slug and the seed (and its number when there are several)."""
    parts = [slug(prompt) or "qwen-image", str(seed)]
    if index is not None:
        parts.append(str(index))
    return "-".join(parts) + ".png"


def inline_webp(image, side: int = 256) -> str:
    """A small inline WebP of a PIL image as a data URI (no file is written)."""
    im = image.copy()
    im.thumbnail((side, side))
    buf = io.BytesIO()
    im.save(buf, format="WEBP", quality=70)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class Media:
    def __init__(self, outbox: Path):
        self.outbox = Path(outbox)
        (self.outbox / "previews").mkdir(parents=True, exist_ok=True)
        (self.outbox / "thumbs").mkdir(parents=True, exist_ok=True)
        (self.outbox / "downloads").mkdir(parents=True, exist_ok=True)

    def preview(self, record) -> str:
        """A WebP preview (longest side 768 px, alpha kept) of a stored image; made once."""
        return self._small(record.path, record.id, "previews", PREVIEW_SIDE)

    def thumbnail(self, path: Path) -> str:
        """A small WebP of a stored image file, for the conversation list (its would-be path when the outbox cannot
        be written: the list still shows, without that picture)."""
        try:
            return self._small(path, Path(path).stem, "thumbs", THUMB_SIDE)
        except OSError as exc:
            log.warning("no thumbnail for %s: %s", Path(path).name, exc)
            return str(self.outbox / "thumbs" / f"{Path(path).stem}.webp")

    def _small(self, path: Path, image_id: str, folder: str, side: int) -> str:
        from PIL import Image

        target = self.outbox / folder / f"{image_id}.webp"
        if target.is_file():
            return str(target)
        try:
            with Image.open(path) as im:
                im.load()
                im.thumbnail((side, side))
                with atomic_write(target, ".webp") as f:
                    im.save(f, format="WEBP", quality=88)
            return str(target)
        except OSError:
            return self._copy(path, image_id, "qwen-image.png")

    def download(self, record, name: str | None = None) -> str:
        """The full-resolution PNG (with its metadata chunks) under a readable name."""
        return self._copy(record.path, record.id, name or f"qwen-image-{record.seed}.png")

    def _copy(self, path: Path, image_id: str, name: str) -> str:
        target = self.outbox / "downloads" / image_id / name
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except OSError:
                atomic_copy(path, target)
        return str(target)

    def download_url(self, record, name: str | None = None) -> str:
        """A relative URL (works behind a proxy's sub-path) that serves the full-resolution PNG. While the outbox
        cannot be written (a full disk, a read-only data folder) it is where the file will be once it can."""
        try:
            path = self.download(record, name)
        except OSError as exc:
            log.warning("no download file for %s yet: %s", record.id, exc)
            path = str(self.outbox / "downloads" / record.id / (name or f"qwen-image-{record.seed}.png"))
        return "gradio_api/file=" + quote(path)

    def preview_url(self, record) -> str:
        """The preview's URL; an inline picture while the outbox cannot be written, so that the page still shows."""
        try:
            return "gradio_api/file=" + quote(self.preview(record))
        except OSError as exc:
            log.warning("no preview file for %s: %s", record.id, exc)
            from PIL import Image

            with Image.open(record.path) as im:
                return inline_webp(im, PREVIEW_SIDE // 2)

    def download_link(self, record, prompt: str) -> tuple[str, str]:
        """(URL, file name) of a result's full-resolution PNG, named after its prompt and seed."""
        name = file_name(prompt, record.seed)
        return self.download_url(record, name), name

    def sweep(self, max_age: float = 86400.0) -> None:
        """Forget derived files older than ``max_age`` (they are remade on demand)."""
        now = time.time()
        for sub in ("previews", "thumbs", "downloads"):
            for path in (self.outbox / sub).iterdir():
                try:
                    if now - path.stat().st_mtime > max_age:
                        shutil.rmtree(path) if path.is_dir() else path.unlink()
                except OSError:
                    pass
