"""Retrieval fine-tuning: ``python -m training.finetune_retrieval --config finetune_retrieval``.

The pretraining loop, initialised from a checkpoint (``init``), with the retrieval objectives:
study-level ITC (duplicate-aware targets), inter-view contrast and ITM with similarity-sampled hard
negatives that exclude false negatives (same findings). Inference ranks by ITC and re-ranks the top-k
with ITM (``training.evaluate --task retrieval --rerank-k K``).
"""

from __future__ import annotations

from collections.abc import Sequence

from training.params import common_parser, resolve
from training.pretrain import train


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``python -m training.finetune_retrieval``)."""
    args = common_parser(__doc__.splitlines()[0]).parse_args(argv)
    config = resolve(args)
    if not config.get("init"):
        raise SystemExit("finetune_retrieval: set `init` to the pretrained checkpoint folder")
    config["command"] = "python -m training.finetune_retrieval " + " ".join(argv if argv is not None else [])
    train(config, resume=args.resume)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
