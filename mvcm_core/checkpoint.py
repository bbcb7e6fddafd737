"""Checkpoints as folders: ``config.json`` + ``model.safetensors`` + ``manifest.json``.

The manifest holds the sha256 of every file, the data provenance, metrics, the git revision and the
exact command that built the checkpoint. Loading verifies every hash before reading a tensor and
reads weights from safetensors only (never pickle). Writes are atomic: the folder is assembled
under a temporary name and renamed into place, so a crash never leaves a half-written checkpoint.

Frozen pretrained text weights (e.g. the packaged MiniLM) are not copied: the manifest names their
source and the sha256 of its weights file, and loading refuses a different file.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from mvcm_core.config import ModelCfg
from mvcm_core.factory import create_model
from mvcm_core.folders import MANIFEST_NAME, recover_folder, sha256_file, staged_folder  # noqa: F401 - re-exported
from mvcm_core.models.text import resolve_text_source

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
FORMAT_VERSION = 1
EXTERNAL_PREFIX = "text.bert."


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message says why in one line."""


def git_revision(cwd: str | Path | None = None) -> str:
    """``git rev-parse HEAD`` (with ``-dirty`` when the tree has changes), or ``unknown``."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _external_text_base(model: torch.nn.Module) -> dict[str, str] | None:
    """Source and sha256 of frozen pretrained text weights that are referenced, not copied."""
    cfg: ModelCfg = model.cfg
    if not cfg.text.pretrained or cfg.text.trainable == "full":
        return None
    source = Path(resolve_text_source(cfg.text.hf_name))
    weights = source / "model.safetensors"
    return {"source": cfg.text.hf_name, "file": weights.name,
            "sha256": sha256_file(weights) if weights.is_file() else "unverified (Hub)"}


def state_to_save(model: torch.nn.Module, external: dict | None) -> dict[str, torch.Tensor]:
    """The state dict minus frozen external text weights (kept: adapters, norms, everything else)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    state = {}
    for name, tensor in model.state_dict().items():
        if external and name.startswith(EXTERNAL_PREFIX) and name not in trainable:
            continue
        state[name] = tensor.detach().contiguous().clone()
    return state


def save_pretrained(model: torch.nn.Module, folder: str | Path, *, provenance: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None, command: str | None = None,
                    extra_files: dict[str, str | bytes] | None = None) -> Path:
    """Write a checkpoint folder atomically and return its path."""
    folder = Path(folder)
    external = _external_text_base(model)
    with staged_folder(folder) as staging:
        (staging / CONFIG_NAME).write_text(json.dumps({"format_version": FORMAT_VERSION,
                                                       "model": model.cfg.to_dict()}, indent=2))
        save_file(state_to_save(model, external), str(staging / WEIGHTS_NAME), metadata={"format": "pt"})
        for name, content in (extra_files or {}).items():
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content if isinstance(content, bytes) else content.encode())
        files = {str(p.relative_to(staging)): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        manifest = {
            "format_version": FORMAT_VERSION, "model_name": model.cfg.name, "files": files,
            "external_weights": {"text.bert": external} if external else {},
            "provenance": provenance or {}, "metrics": metrics or {},
            "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "git_revision": git_revision(Path(__file__).parent),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__,
        }
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2))
    return folder


def resolve_checkpoint(name_or_path: str | Path, revision: str | None = None) -> Path:
    """A local checkpoint folder, or a Hub model repo downloaded (only then is the network used)."""
    path = Path(name_or_path)
    if path.is_dir() or recover_folder(path):  # recover: a save killed between its two renames
        return path
    if path.exists() or str(name_or_path).count("/") != 1:
        raise CheckpointError(f"checkpoint folder not found: {name_or_path}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id=str(name_or_path), revision=revision))
    except Exception as exc:  # noqa: BLE001 - offline, unknown repo, auth: one line for the user
        raise CheckpointError(f"cannot fetch Hub checkpoint {name_or_path!r}: {type(exc).__name__}") from None


def read_manifest(folder: Path, verify: bool = True) -> dict[str, Any]:
    """Read ``manifest.json`` and (by default) check the sha256 of every listed file."""
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointError(f"{folder}: no {MANIFEST_NAME}; refusing an unverifiable checkpoint")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = dict(manifest["files"])
    except (ValueError, KeyError, TypeError):
        raise CheckpointError(f"{folder}: {MANIFEST_NAME} is not a valid manifest") from None
    for required in (CONFIG_NAME, WEIGHTS_NAME):
        if required not in files:
            raise CheckpointError(f"{folder}: the manifest does not list {required}")
    if verify:
        for name, expected in files.items():
            path = folder / name
            if not path.is_file():
                raise CheckpointError(f"{folder}: {name} is missing")
            if sha256_file(path) != expected:
                raise CheckpointError(f"{folder}: {name} does not match its sha256 in the manifest (altered or corrupt)")
    return manifest


def _into_adapted_layers(state: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``x.weight`` to ``x.linear.weight`` where the model wraps that layer in an adapter.

    So weights trained without adapters load into an adapted model (the adapters start at zero).
    """
    expected = set(model.state_dict())
    renamed = {}
    for key, value in state.items():
        stem, _, leaf = key.rpartition(".")
        adapted = f"{stem}.linear.{leaf}"
        renamed[adapted if key not in expected and adapted in expected else key] = value
    return renamed


def _load_state(model: torch.nn.Module, folder: Path, external: bool, allow_missing: tuple[str, ...] = (),
                allow_unused: tuple[str, ...] = ()) -> None:
    """Load ``model.safetensors`` into ``model``; only listed prefixes may be missing or unused."""
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types on corrupt files
        raise CheckpointError(f"{folder}: unreadable weights ({type(exc).__name__})") from None
    state = _into_adapted_layers({k: v for k, v in state.items() if not k.startswith(allow_unused)}, model)
    missing, unexpected = model.load_state_dict(state, strict=False)
    prefixes = allow_missing + ((EXTERNAL_PREFIX,) if external else ())
    bad_missing = [k for k in missing if not k.startswith(prefixes) and ".adapter." not in k]
    if unexpected or bad_missing:
        raise CheckpointError(f"{folder}: weights do not fit the config (e.g. {(bad_missing + unexpected)[:3]})")


def load_weights_into(model: torch.nn.Module, name_or_path: str | Path, *, allow_missing: tuple[str, ...] = (),
                      allow_unused: tuple[str, ...] = (), verify: bool = True) -> dict[str, Any]:
    """Load a checkpoint's verified weights into an existing model (e.g. a backbone under a new head).

    Returns:
        The checkpoint's manifest.
    """
    folder = resolve_checkpoint(name_or_path)
    manifest = read_manifest(folder, verify)
    _load_state(model, folder, bool(manifest.get("external_weights")), allow_missing, allow_unused)
    return manifest


def load_pretrained(name_or_path: str | Path, *, revision: str | None = None, verify: bool = True):  # noqa: ANN201
    """Load an :class:`~mvcm_core.models.mvcm.MVCM` from a checkpoint folder or a Hub id.

    Raises:
        CheckpointError: missing / altered files, a different external base model, bad weights.
    """
    folder = resolve_checkpoint(name_or_path, revision)
    manifest = read_manifest(folder, verify)
    try:
        cfg = ModelCfg.from_dict(json.loads((folder / CONFIG_NAME).read_text())["model"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{folder}: invalid {CONFIG_NAME} ({exc})") from None
    model = create_model(cfg)
    external = manifest.get("external_weights", {}).get("text.bert")
    if external:
        current = _external_text_base(model)
        if verify and current and external["sha256"] != current["sha256"] and "unverified" not in current["sha256"]:
            raise CheckpointError(f"the installed text encoder {external['source']!r} differs from the one this "
                                  "checkpoint was trained with (sha256 mismatch)")
    _load_state(model, folder, external is not None)
    model.manifest = manifest
    return model.eval()
