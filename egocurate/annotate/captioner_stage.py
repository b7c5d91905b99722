"""The caption stage: one caption per clip from any ``transformers`` image-text-to-text model.

The model is given by a Hugging Face id (read from the local cache only) or a folder, and loaded with
``AutoProcessor`` and ``AutoModelForImageTextToText``, so any vision-language model that transformers
supports plugs in. The label stage maps captions to vocabulary labels like manifest text.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa

from egocurate.annotate.frames import strip
from egocurate.catalog import tables
from egocurate.media.encode import clip_stills
from egocurate.media.source import clip_source
from egocurate.stage_base import BaseStage, Resources

DEFAULT_PROMPT = "Describe in one short sentence what the person's hands are doing and where."
Dtype = Literal["auto", "float32", "bfloat16", "float16"]


class CaptionStage(BaseStage):
    """Caption each clip from a few of its frames with a vision-language model (loaded offline)."""

    name = "captions"
    input_key = "clip_id"
    output_table = "clip_captions"
    reads = ("uri", "start_frame", "end_frame")

    def __init__(
        self,
        model: str,
        prompt: str = DEFAULT_PROMPT,
        frames: int = 1,
        short_side: int = 336,
        max_new_tokens: int = 40,
        device: str = "cpu",
        dtype: Dtype = "auto",
        batch_size: int = 8,
        gpus: float = 0.0,
    ):
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.model_name = model
        self.prompt = prompt
        self.frames = frames
        self.short_side = short_side
        self.max_new_tokens = max_new_tokens
        self.device = device
        self.dtype = dtype
        self.resources = Resources(cpus=1, gpus=gpus, batch_size=batch_size)
        self.model = None
        self.processor = None

    def setup(self) -> None:
        """Load the processor and model from local files only (no download at run time)."""
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = {
            "auto": "auto",
            "float32": torch.float32,
            "bfloat16": torch.bfloat16,
            "float16": torch.float16,
        }
        self.processor = AutoProcessor.from_pretrained(self.model_name, local_files_only=True)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues from the right edge
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.model_name, local_files_only=True, dtype=dtype[self.dtype]
        ).to(self.device)
        self.model.eval()

    def _prompt_text(self) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(messages, add_generation_prompt=True)
        image_token = getattr(self.processor, "image_token", "<image>")
        return f"{image_token}\n{self.prompt}"

    def caption_images(self, images: list) -> list[str]:
        """Captions for RGB images (H, W, 3 uint8), one generate call for the batch."""
        import torch

        self.setup()
        text = self._prompt_text()
        inputs = self.processor(images=images, text=[text] * len(images), return_tensors="pt", padding=True)
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs and self.model.dtype != torch.float32:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return [
            " ".join(c.split()) for c in self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        ]

    def process(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        images, good, errors = [], [], []
        for row in rows:
            try:
                images.append(strip(clip_stills(clip_source(row), self.frames, self.short_side)))
                good.append(row)
            except Exception as exc:  # one unreadable clip must not fail the batch
                errors.append((row, f"{type(exc).__name__}: {exc}"))
        captions = self.caption_images(images) if images else []
        out = []
        for row, caption in zip(good, captions, strict=True):
            out.append(
                {
                    "clip_id": row["clip_id"],
                    "video_id": row.get("video_id"),
                    "caption": caption,
                    "caption_model": self.model_name,
                    "prompt": self.prompt,
                    "frames": self.frames,
                    tables.ERROR_KIND: None,
                    tables.ERROR_MESSAGE: None,
                }
            )
        for row, message in errors:
            out.append(
                {
                    "clip_id": row["clip_id"],
                    "video_id": row.get("video_id"),
                    "uri": row.get("uri"),
                    tables.ERROR_KIND: tables.DECODE_ERROR,
                    tables.ERROR_MESSAGE: message,
                }
            )
        schema = pa.schema(
            [
                *tables.spec_for(self.output_table).schema,
                ("uri", pa.string()),
                (tables.ERROR_KIND, pa.string()),
                (tables.ERROR_MESSAGE, pa.string()),
            ]
        )
        return pa.Table.from_pylist(out, schema=schema)
