"""ONNX Runtime stages of the optimised inference path (engine ``onnxruntime``; ``PERFORMANCE.md``).

The three heavy stages of :class:`~mvcm_core.inference_fast.FastPath` run as ONNX Runtime sessions:
the image encoder, the text encoder (with its projection to the fusion width) and the fusion with the
answer-vocabulary prior. They are exported from the loaded PyTorch model when the path is built, in
memory, so a checkpoint ships no ONNX files and cannot disagree with its own weights; the glue
between them (token tables, pooling, the classifier, retrieval) stays in PyTorch.

Why: at a request's sizes (12–130 token rows, 8 × 8 feature maps) PyTorch's eager per-operation
cost dominates, and ONNX Runtime's fused fp32 kernels (convolution + batch norm + activation, layer
norms, GELU) do the same arithmetic with far fewer, cheaper calls. Sessions follow
``torch.get_num_threads()``: one set per thread count, built the first time that count is used.
"""

from __future__ import annotations

import importlib.util
import io
import threading
import warnings

import numpy as np
import torch
from torch import nn

OPSET = 17


def onnxruntime_available() -> bool:
    """True when ``onnxruntime`` can be imported here."""
    return importlib.util.find_spec("onnxruntime") is not None


class _VisionGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.vision = model.vision

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision(pixels)  # [P, C, H, W] -> [P, L, Dv]


class _TextGraph(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.text, self.text_to_width = model.text, model.text_to_width

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.text_to_width(self.text(input_ids, attention_mask))  # [Q, T] -> [Q, T, W]


class _FusionGraph(nn.Module):
    """Fusion, then the head's gated prior (its keys and values baked in); also the last text cross-attention."""

    def __init__(self, model: nn.Module, prior_kv: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        super().__init__()
        self.fusion = model.fusion
        self.head = model.vqa_head
        self.prior_kv = None if prior_kv is None else tuple(t.float().clone() for t in prior_kv)

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, image: torch.Tensor,
                image_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attention = self.fusion.text_layers[-1].cross_attn
        attention.keep_weights = True
        try:
            text_fused, image_fused = self.fusion(text, text_mask, image, image_mask)
            weights = attention.last_weights  # [R, h, T, n + M]
        finally:
            attention.keep_weights, attention.last_weights = False, None
        if self.prior_kv is not None:
            text_fused, image_fused = self.head.inject_prior(text_fused, image_fused, prior_kv=self.prior_kv)
        return text_fused, image_fused, weights


def _export(module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str],
            dynamic: dict[str, dict[int, str]]) -> bytes:
    """``module`` as an ONNX graph (TorchScript exporter, fp32, dynamic axes), serialised in memory."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the tracer's notes on shape-dependent Python branches
        torch.onnx.export(module.eval(), example, buffer, dynamo=False, opset_version=OPSET, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic)
    return buffer.getvalue()


def export_graphs(model: nn.Module, prior_kv: tuple[torch.Tensor, torch.Tensor] | None) -> dict[str, bytes]:
    """The three ONNX graphs of an fp32 ``model`` in eval mode: ``vision``, ``text`` and ``fusion``.

    Example sizes are distinct (2 rows, 9 question tokens, 37 image tokens) so that the tracer cannot
    mistake one dynamic size for another.
    """
    cfg = model.cfg
    size, channels = cfg.preprocess.image_size, cfg.vision.in_chans
    width = model.text_to_width.out_features
    rows, words, tokens = 2, 9, 37
    text_mask = torch.ones(rows, words, dtype=torch.bool)
    image_mask = torch.ones(rows, tokens, dtype=torch.bool)
    image_mask[1, tokens // 2:] = False  # a padded row, so that the masked attention is what gets traced
    return {
        "vision": _export(_VisionGraph(model), (torch.zeros(2, channels, size, size),), ["pixels"], ["tokens"],
                          {"pixels": {0: "views"}, "tokens": {0: "views"}}),
        "text": _export(_TextGraph(model), (torch.ones(rows, words, dtype=torch.long),
                                            torch.ones(rows, words, dtype=torch.long)),
                        ["input_ids", "attention_mask"], ["states"],
                        {name: {0: "rows", 1: "words"} for name in ("input_ids", "attention_mask", "states")}),
        "fusion": _export(_FusionGraph(model, prior_kv), (torch.zeros(rows, words, width), text_mask,
                                                          torch.zeros(rows, tokens, width), image_mask),
                          ["text", "text_mask", "image", "image_mask"], ["text_fused", "image_fused", "weights"],
                          {"text": {0: "rows", 1: "words"}, "text_mask": {0: "rows", 1: "words"},
                           "image": {0: "rows", 1: "tokens"}, "image_mask": {0: "rows", 1: "tokens"},
                           "text_fused": {0: "rows", 1: "words"}, "image_fused": {0: "rows", 1: "tokens"},
                           "weights": {0: "rows", 2: "words", 3: "context"}}),
    }


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(tensor.detach().cpu().numpy())


class OrtStages:
    """ONNX Runtime sessions for the vision, text and fusion stages of one fp32 model."""

    def __init__(self, model: nn.Module, prior_kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Export ``model``'s stages (fp32, eval mode; the model is not altered) and open the sessions."""
        if not onnxruntime_available():
            raise RuntimeError("the onnxruntime engine needs the onnxruntime package (pip install onnxruntime)")
        self.graphs = export_graphs(model, prior_kv)
        self._sessions: dict[int, dict[str, object]] = {}
        self._lock = threading.Lock()
        self.sessions()  # open them now: the first request should not pay for it

    def sessions(self) -> dict[str, object]:
        """The sessions for ``torch.get_num_threads()`` intra-op threads (built on first use)."""
        threads = torch.get_num_threads()
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
                options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                options.log_severity_level = 3  # errors only
                options.enable_mem_pattern = False  # shapes change with every question: no per-shape plans
                # no busy-waiting between runs: spinning ONNX Runtime threads starve PyTorch's on 2 cores
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                options.add_session_config_entry("session.set_denormal_as_zero", "1")
                self._sessions[threads] = {name: ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
                                           for name, graph in self.graphs.items()}
            return self._sessions[threads]

    def vision(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image tokens ``[P, L, Dv]`` of ``pixels [P, C, H, W]``."""
        (tokens,) = self.sessions()["vision"].run(None, {"pixels": _numpy(pixels.float())})
        return torch.from_numpy(tokens)

    def text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Question tokens at the fusion width ``[Q, T, W]``."""
        (states,) = self.sessions()["text"].run(None, {"input_ids": _numpy(input_ids.long()),
                                                       "attention_mask": _numpy(attention_mask.long())})
        return torch.from_numpy(states)

    def fusion(self, text: torch.Tensor, text_mask: torch.Tensor | None, image: torch.Tensor,
               image_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Fused text ``[R, T, W]`` and image ``[R, n, W]`` tokens (after the prior) and the last text layer's
        cross-attention weights ``[R, h, T, n + M]``; a mask of None means every token is real."""
        rows = text.shape[0]
        text_mask = torch.ones(rows, text.shape[1], dtype=torch.bool) if text_mask is None else text_mask
        image_mask = torch.ones(rows, image.shape[1], dtype=torch.bool) if image_mask is None else image_mask
        outputs = self.sessions()["fusion"].run(None, {"text": _numpy(text.float()), "text_mask": _numpy(text_mask),
                                                       "image": _numpy(image.float()), "image_mask": _numpy(image_mask)})
        return tuple(torch.from_numpy(output) for output in outputs)
