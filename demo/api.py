"""The named API endpoints ``/load_study``, ``/ask`` and ``/retrieve``: stateless and JSON-only.

Each call takes the files of one study (as uploaded through ``gradio_client.handle_file``), reads
them again, and returns plain JSON. Uploaded file names never come back: files are ``file 1``,
``file 2``, ... in upload order (names inside rejection reasons are replaced too), and only the
PHI-free technical metadata is returned. :class:`ApiGuard` applies the request-rate limit and deletes
each upload from Gradio's cache once the call has read it (see :class:`demo.session.UploadTracker`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from demo.ask import NOT_A_DIAGNOSIS, check_question, ood_banner
from demo.handlers import META_FIELDS, read_upload, upload_summary
from demo.retrieve import MAX_K, retrieval_dict
from demo.session import AppLimits, RateLimiter, UploadTracker
from mvcm_core.data.study import FileRecord, Study


def _aliases(records: Sequence[FileRecord]) -> dict[str, str]:
    return {str(r.path): f"file {i}" for i, r in enumerate(records, start=1)}


def _scrub(text: str, records: Sequence[FileRecord], aliases: dict[str, str]) -> str:
    """Replace uploaded base names inside a message by their aliases (longest names first)."""
    for record in sorted(records, key=lambda r: -len(r.path.name)):
        if record.path.name:
            text = text.replace(record.path.name, aliases[str(record.path)])
    return text


def study_json(studies: Sequence[Study], records: Sequence[FileRecord]) -> dict[str, Any]:
    """Files, studies and views of an upload as JSON (aliases instead of file names)."""
    aliases = _aliases(records)
    files = [
        {"file": aliases[str(r.path)], "kind": r.kind, "status": _scrub(r.status, records, aliases)}
        for r in records
    ]
    out_studies = []
    for number, study in enumerate(studies, start=1):
        views = []
        for index, view in enumerate(study.views, start=1):
            meta = view.image.meta.to_dict()
            views.append(
                {
                    "view #": index,
                    "file": aliases[str(view.record.path)],
                    "label": view.label,
                    **{key: meta[key] for key in META_FIELDS},
                }
            )
        out_studies.append({"study": number, "views": views})
    return {"summary": upload_summary(studies, records), "files": files, "studies": out_studies}


def _one_study(paths: Sequence[str | Path] | None, limits: AppLimits | None = None) -> Study:
    studies, records = read_upload(paths, limits)
    if not studies:
        raise ValueError(
            "No usable image in the upload: "
            + "; ".join(f"{f['file']}: {f['status']}" for f in study_json(studies, records)["files"])
        )
    if len(studies) > 1:
        raise ValueError(f"The files hold {len(studies)} studies; send the files of one study per call.")
    return studies[0]


def load_study(files: Sequence[str | Path] | None, limits: AppLimits | None = None) -> dict[str, Any]:
    """Read the uploaded files: per-file status, studies, views and their PHI-free metadata."""
    return study_json(*read_upload(files, limits))


def ask(
    predictor: Any,
    files: Sequence[str | Path] | None,
    question: str,
    top_k: int = 5,
    limits: AppLimits | None = None,
) -> dict[str, Any]:
    """Answer one question about one study: ``Answer.to_dict()`` plus the disclaimer and OOD banner."""
    if predictor is None:
        raise ValueError("No model is loaded (viewer-only mode).")
    check_question(question, limits)
    study = _one_study(files, limits)
    answer = predictor.answer(study, question, top_k=max(1, int(top_k or 5))).to_dict()
    return {
        **answer,
        "disclaimer": NOT_A_DIAGNOSIS,
        "ood_banner": ood_banner(answer["in_distribution"], answer["ood_score"]),
    }


def retrieve(
    predictor: Any, files: Sequence[str | Path] | None, k: int = 5, limits: AppLimits | None = None
) -> dict[str, Any]:
    """The ``k`` most similar reports of the index for one study, with scores and the OOD flag."""
    if predictor is None:
        raise ValueError("No model is loaded (viewer-only mode).")
    study = _one_study(files, limits)
    k = max(1, min(int(k or 5), MAX_K))
    return retrieval_dict(predictor.retrieve(study, k=k), k)


class ApiGuard:
    """Rate limit per client session, then the call, then the call's uploads are released (deleted)."""

    def __init__(self, limits: AppLimits, tracker: UploadTracker | None = None) -> None:
        self.limits = limits
        self.limiter = RateLimiter(limits.rate_per_minute, limits.rate_burst)
        self.tracker = tracker or UploadTracker(limits.upload_ttl_s)

    def run(self, client: str | None, files: Sequence[str | Path] | None, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` if ``client`` has a token left; ``files`` are released whatever happens.

        Raises:
            ValueError: rate limit exceeded, or the handler's own one-line error.
        """
        try:
            self.limiter.check(client)
            return fn(*args)
        finally:
            self.tracker.release(files)
            self.tracker.sweep()
