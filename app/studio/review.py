"""Studio tab (placeholder until its module is written)."""

from __future__ import annotations

import gradio as gr

from app.studio.context import StudioContext


def build(ctx: StudioContext) -> None:
    gr.Markdown("This tab is being built.")
