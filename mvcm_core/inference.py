"""Serving: a :class:`Predictor` answers questions about a study and retrieves similar reports.

``Predictor.from_pretrained(folder | Hub id)`` loads a checkpoint once (sha256 of every file checked
before the safetensors are read), with its optional retrieval index (``index/``), out-of-distribution
scorer (``ood.npz``, fitted on the training studies' ``study_features``) and answer calibration
(``calibration.json``). Every call runs under ``torch.inference_mode()`` behind a lock, so one
Predictor serves concurrent requests.

By default (``optimize=True``) answers and retrieval run the optimised path of
:mod:`mvcm_core.inference_fast` (each view encoded once, cached answer-vocabulary prior, bf16 where
the CPU has it natively); ``optimize=False`` is the plain eager fp32 path, kept as the baseline
that ``mvcm bench`` and the tests compare against. :meth:`Predictor.answer_and_retrieve` answers and
retrieves from one encoding of the study.

A *study* is a :class:`~mvcm_core.data.study.Study`, a list of ``(display image, view label)`` pairs
(display images in [0, 1], 1 = white, or uint8), or paths to the files of one study.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

from mvcm_core.checkpoint import load_pretrained, resolve_checkpoint
from mvcm_core.data.batching import image_batch, order_views, text_batch
from mvcm_core.data.transforms import view_to_input
from mvcm_core.inference_fast import FastPath
from mvcm_core.threads import one_blas_thread

StudyInput = Union["Study", Sequence[tuple[np.ndarray, str]], str, Path, Sequence[Union[str, Path]]]  # noqa: F821
MAX_QUESTION_CHARS = 300
INDEX_NAME, OOD_NAME, CALIBRATION_NAME = "index", "ood.npz", "calibration.json"


@dataclass
class Answer:
    """One answer with its evidence."""

    question: str
    answer: str
    probability: float
    alternatives: list[tuple[str, float]]
    view_contributions: dict[str, float]  # probability drop when that view is removed
    attention_maps: dict[str, list[list[float]]]  # per view: [grid, grid], sums to 1 over all views
    view_labels: list[str]  # unique view names, the keys of the two dicts above ("unknown 1", "unknown 2")
    in_distribution: bool | None
    ood_score: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class RetrievedReport:
    """One retrieved report, verbatim, with its score and attribution."""

    rank: int
    score: float
    text: str
    findings: list[dict[str, Any]]
    report_uid: str = ""
    attribution: str = ""
    study_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def view_names(labels: Sequence[str]) -> list[str]:
    """Unique display names of the views: the label, numbered when several views share it."""
    return [label if list(labels).count(label) == 1 else f"{label} {labels[:i + 1].count(label)}"
            for i, label in enumerate(labels)]


def study_views(study: StudyInput, size: int) -> tuple[list[np.ndarray], list[str]]:
    """Model inputs ``[size, size]`` uint8 and view labels of one study, whatever form it came in."""
    from mvcm_core.data.study import Study, load_studies

    if isinstance(study, (str, Path)) or (isinstance(study, Sequence) and study and
                                          isinstance(study[0], (str, Path))):
        paths = [study] if isinstance(study, (str, Path)) else list(study)
        studies, records = load_studies(paths, max_side=size)  # window the model-sized image
        if not studies:
            reasons = "; ".join(f"{r.path.name}: {r.status}" for r in records if not r.ok)
            raise ValueError(f"no usable image in {len(records)} file(s)" + (f" ({reasons})" if reasons else ""))
        if len(studies) > 1:
            raise ValueError(f"these files hold {len(studies)} different studies; pass one study at a time")
        study = studies[0]
    if isinstance(study, Study):
        pairs = [(view.pixels, view.label) for view in study.views]
    else:
        pairs = list(study)
    if not pairs:
        raise ValueError("the study has no views")
    views = [pixels if pixels.dtype == np.uint8 and pixels.shape == (size, size) else view_to_input(pixels, size)
             for pixels, _ in pairs]
    return views, [label for _, label in pairs]


def clean_question(question: str) -> str:
    """The question with its whitespace collapsed; a one-line ValueError when empty or too long."""
    question = " ".join(str(question).split())
    if not question:
        raise ValueError("the question is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise ValueError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
    return question


class Predictor:
    """A loaded checkpoint that answers and retrieves (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, folder: Path | None = None, index: Any = None, ood: Any = None,
                 temperature: float = 1.0, *, optimize: bool = True, precision: str = "auto",
                 engine: str = "auto") -> None:
        """Wrap a loaded model; ``optimize=False`` keeps the plain eager fp32 path (the baseline).

        Optimised path only: ``precision`` ``auto`` (bf16 where the CPU has native bf16), ``fp32`` or
        ``bf16``; ``engine`` ``auto`` (PyTorch for bf16, ONNX Runtime for fp32 where it is installed),
        ``torch`` or ``onnxruntime`` (:func:`~mvcm_core.inference_fast.resolve_engine`).
        """
        from mvcm_core.models.text import load_tokenizer

        self.model = model.eval()
        self.cfg = model.cfg
        self.folder = folder
        self.index, self.ood, self.temperature = index, ood, float(temperature)
        self.scoring, self._report_labels = self._load_scoring(index)
        self.tokenizer = load_tokenizer(self.cfg.text)
        self.answers = list(self.cfg.heads.vqa_answers)
        self._lock = threading.Lock()
        self.fast = FastPath(self.model, precision, engine=engine) if optimize else None
        self.precision = self.fast.precision if self.fast is not None else "fp32"
        self.engine = self.fast.engine if self.fast is not None else "torch"

    def _load_scoring(self, index: Any) -> tuple[Any, np.ndarray | None]:
        """The index's study → report scoring and its reports' labels (None: plain cosine ranking)."""
        if index is None or index.scoring is None or self.model.findings_head is None:
            return None, None
        from mvcm_core.report_scoring import ReportScoring, label_matrix

        scoring = ReportScoring.from_json(index.scoring, len(index))
        return scoring, label_matrix(record.get("findings", []) for record in index.records)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, revision: str | None = None, optimize: bool = True,
                        precision: str = "auto", engine: str = "auto") -> Predictor:
        """Load a checkpoint folder or Hub id (verified), with its index, OOD scorer and calibration."""
        folder = resolve_checkpoint(name_or_path, revision)
        model = load_pretrained(folder, revision=revision)
        index = ood = None
        if (folder / INDEX_NAME).is_dir():
            from mvcm_core.index import ReportIndex

            index = ReportIndex.load(folder / INDEX_NAME)
        if (folder / OOD_NAME).is_file():
            from mvcm_core.ood import OODScorer

            ood = OODScorer.load(folder / OOD_NAME)
        temperature = 1.0
        if (folder / CALIBRATION_NAME).is_file():
            temperature = float(json.loads((folder / CALIBRATION_NAME).read_text())["temperature"])
        return cls(model, folder, index, ood, temperature, optimize=optimize, precision=precision, engine=engine)

    @property
    def manifest(self) -> dict[str, Any]:
        """The checkpoint's manifest (provenance, metrics)."""
        return getattr(self.model, "manifest", {})

    # ----------------------------------------------------------------------------- internals
    def _batch(self, views: list[np.ndarray], labels: list[str], drop_slots: Sequence[int | None]
               ) -> dict[str, torch.Tensor]:
        """The study once per entry of ``drop_slots`` (None = all views; s = without slot s)."""
        batch = image_batch([views] * len(drop_slots), [labels] * len(drop_slots), self.cfg)
        for row, slot in enumerate(drop_slots):
            if slot is not None:
                batch["view_mask"][row, slot] = False
        return batch

    def _numpy_threads(self) -> contextlib.AbstractContextManager:
        """The optimised path keeps NumPy's BLAS on one thread (:mod:`mvcm_core.threads`); the baseline does not."""
        return one_blas_thread() if self.fast is not None else contextlib.nullcontext()

    def _ood(self, study_features: torch.Tensor) -> tuple[bool | None, float | None]:
        if self.ood is None:
            return None, None
        embedding = study_features.float().numpy()[:1]
        with self._numpy_threads():
            return bool(self.ood.is_in_distribution(embedding)[0]), float(self.ood.score(embedding)[0])

    def _attention_maps(self, weights: torch.Tensor, view_mask: torch.Tensor, labels: list[str]
                        ) -> dict[str, list[list[float]]]:
        """Question [CLS] → image-token attention ``weights [B, h, T, V*L + M]`` of the last fusion layer,
        per view as a patch grid."""
        weights = weights.float()
        vision = self.model.vision
        v, length = self.cfg.vision.max_views, vision.num_prefix_tokens + vision.num_patches
        cls_row = weights[0, :, 0, : v * length].mean(0).view(v, length)  # [V*L] -> [V, L]
        patches = cls_row[:, vision.num_prefix_tokens:]
        patches = patches / patches.sum().clamp_min(1e-12)
        grid = int(round(vision.num_patches ** 0.5))
        slots, names = order_views(labels, v), view_names(labels)
        maps = {}
        for slot, index in enumerate(slots):
            if index is not None and bool(view_mask[0, slot]):
                maps[names[index]] = patches[slot].view(grid, grid).tolist()  # [N] -> [grid, grid]
        return maps

    def _drop_rows(self, labels: list[str]) -> list[int | None]:
        """The rows of one question: every view (None), then without each view slot when there are several."""
        slots = order_views(labels, self.cfg.vision.max_views)
        present = [s for s, index in enumerate(slots) if index is not None]
        return [None] + (present if len(present) > 1 else [])

    def _answer_eager(self, views: list[np.ndarray], labels: list[str], question: str, top_k: int) -> Answer:
        """The plain eager fp32 path: the study once per row (all views, then without each view)."""
        drops = self._drop_rows(labels)
        batch = self._batch(views, labels, drops)
        batch.update(text_batch([question] * len(drops), self.tokenizer, 32))
        attention = self.model.fusion.text_layers[-1].cross_attn
        with self._lock, torch.inference_mode():
            attention.keep_weights = True
            try:
                study = self.model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])
                logits = self.model.vqa_logits(batch, study).float() / self.temperature  # [1 + drops, A]
                maps = self._attention_maps(attention.last_weights, batch["view_mask"], labels)
            finally:
                attention.keep_weights, attention.last_weights = False, None
        return self._make_answer(question, logits, drops, labels, maps, study["study_features"][:1], top_k)

    def _analyse_fast(self, views: list[np.ndarray], labels: list[str], question: str, top_k: int,
                      k: int | None) -> tuple[Answer, dict[str, Any] | None]:
        """The optimised path: one encoding of the study serves the answer, its evidence and retrieval."""
        drops = self._drop_rows(labels)
        text = text_batch([question], self.tokenizer, 32)
        with self._lock, torch.inference_mode():
            images, view_ids, view_mask = self.fast.inputs(views, labels)
            encoding = self.fast.encode_study(images, view_ids, view_mask)
            tokens, mask = self.fast.encode_questions(text["input_ids"], text["attention_mask"])
            logits, weights = self.fast.answer_logits(encoding, tokens, mask, drops, keep_weights=True)
            maps = self._attention_maps(weights, view_mask[None], labels)  # [V] -> [1, V]
        answer = self._make_answer(question, logits / self.temperature, drops, labels, maps,
                                   encoding.study_features, top_k)
        if k is None:
            return answer, None
        retrieved = {"reports": self._reports(encoding.image_embeds.numpy(), k, encoding.study_features),
                     "in_distribution": answer.in_distribution, "ood_score": answer.ood_score}
        return answer, retrieved

    def _make_answer(self, question: str, logits: torch.Tensor, drops: list[int | None], labels: list[str],
                     maps: dict[str, list[list[float]]], study_features: torch.Tensor, top_k: int) -> Answer:
        """The :class:`Answer` from calibrated logits ``[1 + drops, A]`` (row 0: every view present)."""
        slots = order_views(labels, self.cfg.vision.max_views)
        probabilities = logits.softmax(-1)
        best = probabilities[0].topk(min(top_k, len(self.answers)))
        chosen = int(best.indices[0])
        names = view_names(labels)
        contributions = {names[slots[slot]]: round(float(probabilities[0, chosen] - probabilities[row, chosen]), 4)
                         for row, slot in enumerate(drops) if slot is not None}
        in_distribution, score = self._ood(study_features)
        return Answer(question=question, answer=self.answers[chosen], probability=round(float(best.values[0]), 4),
                      alternatives=[(self.answers[int(i)], round(float(p), 4)) for p, i in zip(*best)],
                      view_contributions=contributions, attention_maps=maps, view_labels=names,
                      in_distribution=in_distribution, ood_score=score)

    # ----------------------------------------------------------------------------------- API
    def answer(self, study: StudyInput, question: str, top_k: int = 5) -> Answer:
        """Answer one question; evidence = top-k alternatives, attention maps, view contributions."""
        question = clean_question(question)
        views, labels = study_views(study, self.cfg.preprocess.image_size)
        if self.fast is None:
            return self._answer_eager(views, labels, question, top_k)
        return self._analyse_fast(views, labels, question, top_k, None)[0]

    def answer_and_retrieve(self, study: StudyInput, question: str, top_k: int = 5, k: int = 5
                            ) -> tuple[Answer, dict[str, Any]]:
        """:meth:`answer` and :meth:`retrieve` of one study (the optimised path encodes it once)."""
        question = clean_question(question)
        views, labels = study_views(study, self.cfg.preprocess.image_size)
        if self.fast is None:
            return self._answer_eager(views, labels, question, top_k), self.retrieve(list(zip(views, labels)), k)
        return self._analyse_fast(views, labels, question, top_k, k)

    def question_probabilities(self, study: StudyInput, questions: Sequence[str]) -> np.ndarray:
        """Calibrated answer probabilities ``[Q, A]`` of several questions about one study (every view)."""
        views, labels = study_views(study, self.cfg.preprocess.image_size)
        text = text_batch([clean_question(q) for q in questions], self.tokenizer, 32)
        with self._lock, torch.inference_mode():
            if self.fast is None:
                batch = {**self._batch(views, labels, [None]), **text,
                         "study_index": torch.zeros(len(questions), dtype=torch.long)}
                logits = self.model.vqa_logits(batch).float()  # [Q, A]
            else:
                images, view_ids, view_mask = self.fast.inputs(views, labels)
                encoding = self.fast.encode_study(images, view_ids, view_mask)
                tokens, mask = self.fast.encode_questions(text["input_ids"], text["attention_mask"])
                logits, _ = self.fast.answer_logits(encoding, tokens, mask, [None] * len(questions))
        return (logits / self.temperature).softmax(-1).numpy()

    def encode_study(self, study: StudyInput) -> dict[str, np.ndarray]:
        """``image_embeds [E]`` (L2-normalised, for retrieval) and ``study_features [Dv]`` (for OOD)."""
        views, labels = study_views(study, self.cfg.preprocess.image_size)
        with self._lock, torch.inference_mode():
            if self.fast is not None:
                encoding = self.fast.encode_study(*self.fast.inputs(views, labels))
                out = {"image_embeds": encoding.image_embeds, "study_features": encoding.study_features}
            else:
                batch = self._batch(views, labels, [None])
                out = self.model.encode_study(batch["images"], batch["view_ids"], batch["view_mask"])
        return {key: out[key][0].float().numpy() for key in ("image_embeds", "study_features")}

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """``[N, E]`` L2-normalised report embeddings."""
        encoded = text_batch(texts, self.tokenizer, self.cfg.text.max_length)
        with self._lock, torch.inference_mode():
            out = self.model.encode_text(encoded["input_ids"], encoded["attention_mask"])
        return out["text_embeds"].float().numpy()

    def _reports(self, query: np.ndarray, k: int, study_features: torch.Tensor | None = None) -> list[RetrievedReport]:
        """Top-``k`` reports for a ``[1, E]`` query; a study query (``study_features`` given) uses the index's
        scoring when it has one (:mod:`mvcm_core.report_scoring`), a text query plain cosine."""
        if self.index is None or len(self.index) == 0:
            raise ValueError("this checkpoint has no retrieval index")
        if self.scoring is not None and study_features is not None:
            from mvcm_core.report_scoring import scored_search

            with torch.inference_mode():
                probabilities = torch.sigmoid(self.model.findings_head(study_features.float())).numpy()  # [1, F]
            with self._numpy_threads():
                scores, cosines, ids = scored_search(self.index, self.scoring, self._report_labels, query,
                                                     probabilities, k)
        else:
            with self._numpy_threads():
                scores, ids = self.index.search(query, k)
            scores, cosines, ids = scores[0], scores[0], ids[0]
        out = []
        for rank, (score, cosine, row) in enumerate(zip(scores, cosines, ids), start=1):
            record = dict(self.index.records[int(row)], cosine=round(float(cosine), 4))
            out.append(RetrievedReport(rank=rank, score=round(float(score), 4), text=record.pop("text"),
                                       findings=record.pop("findings", []), report_uid=record.pop("report_uid", ""),
                                       attribution=record.pop("attribution", ""),
                                       study_id=record.pop("study_id", None), extra=record))
        return out

    def retrieve(self, study: StudyInput, k: int = 5) -> dict[str, Any]:
        """The ``k`` most similar reports of the index for a study, with the OOD flag."""
        encoded = self.encode_study(study)
        features = torch.from_numpy(encoded["study_features"])[None]  # [Dv] -> [1, Dv]
        in_distribution, score = self._ood(features)
        return {"reports": self._reports(encoded["image_embeds"][None], k, features),
                "in_distribution": in_distribution, "ood_score": score}

    def retrieve_text(self, query: str, k: int = 5) -> list[RetrievedReport]:
        """The ``k`` reports of the index closest to a free-text query."""
        if not str(query).strip():
            raise ValueError("the query is empty")
        return self._reports(self.embed_texts([query]), k)


DEFAULT_CHECKPOINT_NAME = "mvcm-tiny-phantom"


def default_checkpoint() -> str:
    """``$MVCM_CHECKPOINT`` (folder or Hub id), else the checkpoint shipped in the repository's ``assets/``."""
    import os

    configured = os.environ.get("MVCM_CHECKPOINT")
    if configured:
        return configured
    shipped = Path(__file__).resolve().parents[1] / "assets" / "checkpoints" / DEFAULT_CHECKPOINT_NAME
    if not shipped.is_dir():
        raise FileNotFoundError(f"no shipped checkpoint at {shipped}; pass --checkpoint or set MVCM_CHECKPOINT")
    return str(shipped)


def build_report_index(predictor: Predictor, records: Sequence[dict[str, Any]], *, batch_size: int = 64,
                       backend: str = "auto", progress: bool = True) -> Any:
    """Embed reports with a checkpoint's text tower and index them (records need ``text`` and ``report_uid``).

    Returns:
        A :class:`~mvcm_core.index.ReportIndex` whose meta names the checkpoint.
    """
    from tqdm import tqdm

    from mvcm_core.index import ReportIndex

    if not records:
        raise ValueError("no reports to index")
    meta = {"model_name": predictor.cfg.name, "checkpoint": str(predictor.folder or ""),
            "weights_sha256": predictor.manifest.get("files", {}).get("model.safetensors", "")}
    index = ReportIndex(predictor.cfg.heads.embed_dim, backend, meta=meta)
    starts = range(0, len(records), batch_size)
    for start in tqdm(starts, desc="index reports", disable=not progress, leave=False):
        chunk = [dict(r) for r in records[start:start + batch_size]]
        index.add(predictor.embed_texts([r["text"] for r in chunk]), chunk)
    return index
