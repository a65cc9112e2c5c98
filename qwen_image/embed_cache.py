"""Prompt-embedding cache: regenerating the same prompt (and references) with a new seed skips the text encoder.

The cache wraps a pipeline instance's ``encode_prompt``; the key is the pipeline role, the prompt, a digest of the
condition images' pixels and the batch settings. Entries are evicted oldest-first beyond a byte budget or an entry
count (small embeddings would otherwise pile up by the hundred thousand, each with its key and tensor objects).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict


def image_digest(image) -> str:
    """Content hash of a PIL image (mode, size and pixels)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{image.mode}:{image.size}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def _nbytes(value) -> int:
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    try:
        return value.numel() * value.element_size()
    except AttributeError:
        return 0


class EmbedCache:
    def __init__(self, max_bytes: int = 256 * 1024**2, max_entries: int = 64):
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self._entries: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    def _get(self, key):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key][0]
            self.misses += 1
            return None

    def _put(self, key, value) -> None:
        size = _nbytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            self._entries[key] = (value, size)
            self._bytes += size
            while (self._bytes > self.max_bytes or len(self._entries) > self.max_entries) and self._entries:
                _, (_, old) = self._entries.popitem(last=False)
                self._bytes -= old

    def wrap(self, pipe, role: str) -> None:
        """Replace ``pipe.encode_prompt`` by a cached version (once per pipeline instance)."""
        if getattr(pipe, "_qic_cached", False):
            return
        original = pipe.encode_prompt

        def encode_prompt(*args, **kwargs):
            if args or kwargs.get("prompt_embeds") is not None:
                return original(*args, **kwargs)
            prompt = kwargs.get("prompt")
            prompts = (prompt,) if isinstance(prompt, str) else tuple(prompt or ())
            images = kwargs.get("image") or ()
            key = (
                role,
                prompts,
                tuple(image_digest(i) for i in images),
                kwargs.get("num_images_per_prompt", 1),
                kwargs.get("max_sequence_length"),
            )
            cached = self._get(key)
            if cached is not None:
                return cached
            value = original(**kwargs)
            self._put(key, value)
            return value

        pipe.encode_prompt = encode_prompt
        pipe._qic_cached = True
