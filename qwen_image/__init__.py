"""Qwen Image Chat engine: registry, generation requests, memory planner, loading and running the Qwen-Image pipelines.

This package never imports gradio, and importing it does no model work.
"""

__version__ = "0.1.0"
