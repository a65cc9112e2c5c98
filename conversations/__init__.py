"""Conversations: the store (SQLite + PNG files), owners, server-side jobs, archives and the turn service.

It drives a generation backend (``qwen_image.backend.Backend``) and never imports gradio; the UI calls into it.
"""
