"""Predictor: verified loading, answers with evidence, concurrency, and the ``mvcm ask`` command."""

from __future__ import annotations

import importlib.util
import json
import threading

import pytest
import torch
from conftest import TINY_OVERRIDES

from mvcm_core.checkpoint import CheckpointError, save_pretrained
from mvcm_core.data.phantom.dataset import random_specs, write_study
from mvcm_core.inference import Predictor
from training.finetune_vqa import build_vqa_model

ANSWERS = ["no", "yes", "left", "right", "bilateral", "cardiomegaly"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    torch.manual_seed(0)
    model = build_vqa_model("mvcm-tiny", ANSWERS, True, TINY_OVERRIDES)
    checkpoint = save_pretrained(model, root / "checkpoint")
    spec = random_specs(1, seed=3)[0]
    write_study(root / "studies", spec, size=64)
    return checkpoint, root / "studies" / spec.study_id


def test_answer_carries_alternatives_attention_maps_and_view_contributions(served):
    checkpoint, study = served
    predictor = Predictor.from_pretrained(checkpoint)
    answer = predictor.answer(study, "  Is there a pleural   effusion? ", top_k=3)
    assert answer.question == "Is there a pleural effusion?"
    assert answer.answer == answer.alternatives[0][0] and answer.answer in ANSWERS
    probabilities = [p for _, p in answer.alternatives]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert sorted(answer.view_labels) == ["LATERAL", "PA"]
    assert set(answer.view_contributions) == {"PA", "LATERAL"}
    grid = predictor.model.vision.num_patches ** 0.5
    total = sum(sum(map(sum, m)) for m in answer.attention_maps.values())
    assert set(answer.attention_maps) == {"PA", "LATERAL"} and len(answer.attention_maps["PA"]) == grid
    assert total == pytest.approx(1.0, abs=1e-4)
    assert answer.in_distribution is None  # no OOD scorer in this checkpoint
    json.dumps(answer.to_dict())


def test_single_view_study_has_no_contributions_and_one_map(served):
    checkpoint, study = served
    predictor = Predictor.from_pretrained(checkpoint)
    answer = predictor.answer([study / "PA.dcm"], "Is the heart enlarged?")
    assert answer.view_contributions == {} and list(answer.attention_maps) == ["PA"]


def test_concurrent_answers_equal_sequential_ones(served):
    checkpoint, study = served
    predictor = Predictor.from_pretrained(checkpoint)
    questions = ["Is there a pneumothorax?", "Which side is the effusion on?", "Is this study normal?"] * 2
    expected = [predictor.answer(study, q).alternatives for q in questions]
    results: dict[int, list] = {}

    def ask(i: int) -> None:
        results[i] = predictor.answer(study, questions[i]).alternatives

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(questions))] == expected


def test_bad_questions_and_inputs_get_one_line_errors(served, tmp_path):
    checkpoint, study = served
    predictor = Predictor.from_pretrained(checkpoint)
    with pytest.raises(ValueError, match="empty"):
        predictor.answer(study, "   ")
    with pytest.raises(ValueError, match="longer than"):
        predictor.answer(study, "why " * 100)
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="no usable image"):
        predictor.answer([tmp_path / "notes.txt"], "Is there an effusion?")
    with pytest.raises(ValueError, match="no retrieval index"):
        predictor.retrieve(study)


def test_a_tampered_weights_file_is_refused_before_loading(served, tmp_path):
    import shutil

    checkpoint, _ = served
    copy = shutil.copytree(checkpoint, tmp_path / "tampered")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        Predictor.from_pretrained(copy)


def test_mvcm_ask_prints_json(served, capsys):
    from mvcm_core.cli.main import main

    checkpoint, study = served
    assert main(["ask", str(study), "--question", "Is there a pleural effusion?", "--json",
                 "--checkpoint", str(checkpoint)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["answer"] in ANSWERS and len(out["alternatives"]) == 5 and "in_distribution" in out
    assert main(["ask", str(study), "--question", "", "--checkpoint", str(checkpoint)]) == 2
    assert "empty" in capsys.readouterr().err


REPORTS = [
    {"report_uid": f"R{i}", "text": text, "findings": findings, "attribution": "synthetic test report"}
    for i, (text, findings) in enumerate([
        ("Small left pleural effusion.", [{"term": "pleural effusion", "side": "left"}]),
        ("The heart is enlarged.", [{"term": "cardiomegaly"}]),
        ("No acute cardiopulmonary abnormality.", []),
        ("Right upper lobe nodule.", [{"term": "nodule", "side": "right"}]),
        ("Pacemaker in place; lungs clear.", [{"term": "device"}]),
        ("Hyperinflated lungs consistent with emphysema.", [{"term": "emphysema"}]),
    ])
]


@pytest.fixture(scope="module")
def served_with_index(served, tmp_path_factory):
    import shutil

    from mvcm_core.cli.main import main

    checkpoint, study = served
    folder = shutil.copytree(checkpoint, tmp_path_factory.mktemp("full") / "checkpoint")
    reports = folder.parent / "reports.jsonl"
    reports.write_text("\n".join(json.dumps(r) for r in REPORTS) + "\n")
    assert main(["index", str(reports), "--out", str(folder / "index"), "--checkpoint", str(checkpoint)]) == 0
    return folder, study


def test_retrieve_ranks_reports_with_scores_findings_and_attribution(served_with_index):
    folder, study = served_with_index
    predictor = Predictor.from_pretrained(folder)
    result = predictor.retrieve(study, k=4)
    reports = result["reports"]
    assert [r.rank for r in reports] == [1, 2, 3, 4]
    assert [r.score for r in reports] == sorted((r.score for r in reports), reverse=True)
    assert {r.report_uid for r in reports} <= {r["report_uid"] for r in REPORTS}
    assert all(r.attribution == "synthetic test report" for r in reports)
    by_text = predictor.retrieve_text(REPORTS[1]["text"], k=2)
    assert by_text[0].report_uid == "R1" and by_text[0].score == pytest.approx(1.0, abs=2e-3)  # itself


def test_ood_scorer_in_the_checkpoint_flags_unlike_inputs(served_with_index, tmp_path):
    import shutil

    import numpy as np

    from mvcm_core.ood import OODScorer

    folder, study = served_with_index
    folder = shutil.copytree(folder, tmp_path / "checkpoint")
    predictor = Predictor.from_pretrained(folder)
    features = predictor.encode_study(study)["study_features"]
    rng = np.random.default_rng(0)
    cloud = features + 0.01 * rng.standard_normal((200, features.shape[0]))  # "training studies" around it
    scorer = OODScorer("mahalanobis").fit(cloud[:150])
    scorer.calibrate(cloud[150:], quantile=0.99)
    scorer.save(folder / "ood.npz")
    predictor = Predictor.from_pretrained(folder)
    answer = predictor.answer(study, "Is there a pleural effusion?")
    assert answer.in_distribution is True and answer.ood_score is not None
    noise = (rng.random((64, 64)) * 255).astype(np.uint8)
    flagged = predictor.retrieve([(noise, "unknown")], k=2)
    assert flagged["in_distribution"] is False and flagged["ood_score"] > scorer.threshold


def test_mvcm_retrieve_and_index_errors(served_with_index, tmp_path, capsys):
    from mvcm_core.cli.main import main

    folder, study = served_with_index
    assert main(["retrieve", str(study), "--top-k", "5", "--json", "--checkpoint", str(folder)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["reports"]) == 5 and out["reports"][0]["rank"] == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no uid"}\n')
    assert main(["index", str(bad), "--out", str(tmp_path / "idx"), "--checkpoint", str(folder)]) == 2
    assert "line 1" in capsys.readouterr().err


def test_views_sharing_a_label_keep_separate_maps(served):
    import numpy as np

    checkpoint, _ = served
    predictor = Predictor.from_pretrained(checkpoint)
    rng = np.random.default_rng(1)
    views = [((rng.random((64, 64)) * 255).astype(np.uint8), "unknown") for _ in range(2)]
    answer = predictor.answer(views, "Is there a pleural effusion?")
    assert answer.view_labels == ["unknown 1", "unknown 2"]
    assert set(answer.attention_maps) == set(answer.view_contributions) == {"unknown 1", "unknown 2"}


# ------------------------------------------------------------------ the optimised path (issue 8)
QUESTIONS = ["Is there a pleural effusion?", "Which side is the effusion on?", "Is this study normal?"]


def _paths(folder, precision="fp32", engine="torch"):
    eager = Predictor.from_pretrained(folder, optimize=False)
    fast = Predictor(eager.model, eager.folder, eager.index, eager.ood, eager.temperature, precision=precision,
                     engine=engine)
    return eager, fast


def _close_answers(a, b, tol):
    assert a.answer == b.answer and a.view_labels == b.view_labels
    assert [n for n, _ in a.alternatives] == [n for n, _ in b.alternatives]
    assert all(abs(p - q) <= tol for (_, p), (_, q) in zip(a.alternatives, b.alternatives))
    assert a.view_contributions.keys() == b.view_contributions.keys()
    assert all(abs(a.view_contributions[k] - b.view_contributions[k]) <= tol for k in a.view_contributions)
    assert a.attention_maps.keys() == b.attention_maps.keys()
    for name in a.attention_maps:
        assert torch.allclose(torch.tensor(a.attention_maps[name]), torch.tensor(b.attention_maps[name]), atol=tol)


def test_the_optimised_fp32_path_equals_the_eager_baseline(served_with_index):
    folder, study = served_with_index
    eager, fast = _paths(folder)
    assert eager.fast is None and fast.precision == "fp32"
    for question in QUESTIONS:
        answer, retrieved = fast.answer_and_retrieve(study, question, top_k=5, k=4)
        _close_answers(answer, eager.answer(study, question, top_k=5), 2e-4)
        expected = eager.retrieve(study, k=4)
        assert [r.report_uid for r in retrieved["reports"]] == [r.report_uid for r in expected["reports"]]
        assert all(abs(r.score - e.score) <= 2e-4 for r, e in zip(retrieved["reports"], expected["reports"]))
    fast.fast.merge_rows = True  # the variant that pads every row into one fusion pass (did not win)
    _close_answers(fast.answer(study, QUESTIONS[0]), eager.answer(study, QUESTIONS[0]), 2e-4)
    fast.fast.merge_rows = False
    single = [study / "PA.dcm"]  # one view: no contributions, one map, the absent view's tokens dropped
    _close_answers(fast.answer(single, QUESTIONS[0]), eager.answer(single, QUESTIONS[0]), 2e-4)
    probabilities = fast.question_probabilities(study, QUESTIONS)
    assert probabilities.shape == (3, len(ANSWERS))
    assert abs(probabilities - eager.question_probabilities(study, QUESTIONS)).max() < 1e-4
    assert abs(eager.encode_study(study)["image_embeds"] - fast.encode_study(study)["image_embeds"]).max() < 1e-5


def test_the_onnxruntime_engine_equals_the_eager_baseline(served_with_index):
    pytest.importorskip("onnxruntime")
    folder, study = served_with_index
    eager, fast = _paths(folder, engine="onnxruntime")
    assert fast.engine == "onnxruntime" and fast.precision == "fp32" and fast.fast.model is eager.model
    threads = torch.get_num_threads()
    try:
        for count, question in zip((threads, 1, threads), QUESTIONS):  # sessions follow PyTorch's thread count
            torch.set_num_threads(count)
            answer, retrieved = fast.answer_and_retrieve(study, question, top_k=5, k=4)
            _close_answers(answer, eager.answer(study, question, top_k=5), 2e-4)
            expected = eager.retrieve(study, k=4)
            assert [r.report_uid for r in retrieved["reports"]] == [r.report_uid for r in expected["reports"]]
    finally:
        torch.set_num_threads(threads)
    assert sorted(fast.fast.ort._sessions) == sorted({threads, 1})
    single = [study / "PA.dcm"]  # one view: the fusion graph runs on fewer tokens than it was traced with
    _close_answers(fast.answer(single, QUESTIONS[0]), eager.answer(single, QUESTIONS[0]), 2e-4)
    probabilities = fast.question_probabilities(study, QUESTIONS)  # three questions of different lengths, padded
    assert abs(probabilities - eager.question_probabilities(study, QUESTIONS)).max() < 1e-4


def test_the_engine_follows_the_precision_and_the_environment(monkeypatch):
    from mvcm_core import inference_fast

    monkeypatch.delenv("MVCM_ENGINE", raising=False)
    monkeypatch.delenv("MVCM_PRECISION", raising=False)
    monkeypatch.setattr(inference_fast, "onnxruntime_available", lambda: True)
    monkeypatch.setattr(inference_fast, "native_bf16_supported", lambda: True)
    assert inference_fast.resolve_engine("auto") == "torch"  # bf16 runs in PyTorch
    assert inference_fast.resolve_engine("auto", "fp32") == "onnxruntime"
    monkeypatch.setattr(inference_fast, "native_bf16_supported", lambda: False)
    assert inference_fast.resolve_engine("auto") == "onnxruntime"
    monkeypatch.setenv("MVCM_ENGINE", "torch")
    assert inference_fast.resolve_engine("auto") == "torch"
    monkeypatch.setattr(inference_fast, "onnxruntime_available", lambda: False)
    monkeypatch.delenv("MVCM_ENGINE")
    assert inference_fast.resolve_engine("auto") == "torch"  # not installed: PyTorch
    with pytest.raises(ValueError, match="engine must be"):
        inference_fast.resolve_engine("tensorrt")
    with pytest.raises(ValueError, match="fp32"):
        inference_fast.resolve_engine("onnxruntime", "bf16")


def test_the_bf16_path_stays_close_to_the_eager_baseline(served):
    checkpoint, study = served
    eager, fast = _paths(checkpoint, precision="bf16")
    assert fast.precision == "bf16" and fast.fast.model is not eager.model
    assert next(fast.fast.model.parameters()).dtype == torch.bfloat16
    assert next(eager.model.parameters()).dtype == torch.float32  # the baseline keeps its fp32 weights
    difference = abs(fast.question_probabilities(study, QUESTIONS) - eager.question_probabilities(study, QUESTIONS))
    assert difference.max() < 0.05


def test_bf16_is_chosen_only_where_the_cpu_has_it(monkeypatch):
    from mvcm_core import inference_fast

    monkeypatch.delenv("MVCM_PRECISION", raising=False)
    monkeypatch.setattr(inference_fast, "native_bf16_supported", lambda: False)
    assert inference_fast.resolve_precision("auto") == "fp32"
    monkeypatch.setattr(inference_fast, "native_bf16_supported", lambda: True)
    assert inference_fast.resolve_precision("auto") == "bf16"
    assert inference_fast.resolve_precision("fp32") == "fp32"
    monkeypatch.setenv("MVCM_PRECISION", "fp32")
    assert inference_fast.resolve_precision("auto") == "fp32"
    with pytest.raises(ValueError, match="precision"):
        inference_fast.resolve_precision("fp16")


def test_native_bf16_detection_reads_the_cpu_flags(monkeypatch, tmp_path):
    from mvcm_core import inference_fast

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(inference_fast, "Path", lambda _: cpuinfo)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx2 avx512f avx512bw\n")
    assert inference_fast.native_bf16_supported() is False  # avx512 alone emulates bf16: no
    cpuinfo.write_text("processor : 0\nflags : fpu sse2 avx512f avx512_bf16\n")
    assert inference_fast.native_bf16_supported() is True


def test_a_scored_index_ranks_studies_by_its_scoring_and_text_queries_by_cosine(served_with_index, tmp_path):
    import shutil

    import numpy as np

    from mvcm_core.index import ReportIndex
    from mvcm_core.report_scoring import ReportScoring, label_matrix

    source, study = served_with_index
    folder = shutil.copytree(source, tmp_path / "checkpoint")
    index = ReportIndex.load(folder / "index")
    plain = Predictor.from_pretrained(folder, optimize=False)
    top_by_cosine = plain.retrieve(study, k=1)["reports"][0].report_uid
    hub = np.zeros(len(index), dtype=np.float32)
    hub[[r["report_uid"] for r in index.records].index(top_by_cosine)] = 10.0  # a hub penalty demotes it to last
    index.scoring = ReportScoring(hub, hub_weight=1.0, findings_weight=0.05).to_json()
    index.save(folder / "index")
    eager, fast = _paths(folder)
    assert eager.scoring is not None and plain.scoring is None
    encoded = eager.encode_study(study)
    with torch.no_grad():
        probs = torch.sigmoid(eager.model.findings_head(torch.from_numpy(encoded["study_features"])[None])).numpy()
    cosines = encoded["image_embeds"][None] @ eager.index.embeddings.T  # [1, N]
    full = eager.scoring.scores(cosines, probs, label_matrix(r["findings"] for r in index.records))[0]
    expected = np.argsort(-full, kind="stable")[:4]
    reports = eager.retrieve(study, k=4)["reports"]
    assert [r.report_uid for r in reports] == [index.records[i]["report_uid"] for i in expected]
    assert top_by_cosine not in {r.report_uid for r in reports}
    assert [r.score for r in reports] == pytest.approx(full[expected].tolist(), abs=1e-4)
    assert [r.extra["cosine"] for r in reports] == pytest.approx(cosines[0, expected].tolist(), abs=1e-4)
    _, retrieved = fast.answer_and_retrieve(study, QUESTIONS[0], k=4)
    assert [r.report_uid for r in retrieved["reports"]] == [r.report_uid for r in reports]
    by_text = eager.retrieve_text(REPORTS[1]["text"], k=2)  # text queries keep the plain cosine
    assert by_text[0].report_uid == "R1" and by_text[0].score == pytest.approx(1.0, abs=2e-3)


def test_a_cnn_tower_with_positions_regions_evidence_and_pointer_runs_folded_and_channels_last_as_eager(
        served, tmp_path):
    _, study = served
    overrides = {**TINY_OVERRIDES, "vision": {"timm_name": "resnet18", "image_size": 32, "timm_kwargs": {
        "channels": [8, 16, 32, 64], "stem_width": 8, "output_stride": 16}, "train_mask_ratio": 0.0},
        "fusion": {**TINY_OVERRIDES["fusion"], "image_positions": True},
        "heads": {**TINY_OVERRIDES["heads"], "vqa_regions": 2, "position_heads": True, "vqa_evidence": True,
                  "vqa_evidence_pointer": True}}
    torch.manual_seed(0)
    model = build_vqa_model("mvcm-tiny-cnn", ANSWERS, True, overrides)
    with torch.no_grad():
        model.fusion_positions.normal_(std=0.5)  # trained positions: the fast path must add them as well
        for head in (model.side_head, model.depth_head, model.vqa_head.evidence[0], model.vqa_head.pointer,
                     model.vqa_head.pointed[0]):
            for parameter in head.parameters():  # evidence that moves the answer, read from the right views
                parameter.normal_(std=2.0)
    for norm in (m for m in model.vision.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-0.5, 0.5)  # statistics a trained tower would have: folding must use them
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.2, 0.2)
    eager, fast = _paths(save_pretrained(model, tmp_path / "cnn"))
    assert fast.fast.channels_last and fast.fast.model is not eager.model
    assert fast.fast.model.vqa_head.regions.shape == (2 * 2 * 2, 2 * 5)  # 2 views × 2×2 regions, 1 + 2×2 tokens
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.fast.model.vision.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in eager.model.vision.modules()) > 0  # baseline untouched
    single = [study / "PA.dcm"]  # the lateral's depth evidence is absent, in every path alike
    for question in QUESTIONS:
        _close_answers(fast.answer(study, question, top_k=5), eager.answer(study, question, top_k=5), 2e-4)
        _close_answers(fast.answer(single, question, top_k=5), eager.answer(single, question, top_k=5), 2e-4)
    assert abs(eager.encode_study(study)["image_embeds"] - fast.encode_study(study)["image_embeds"]).max() < 1e-5
    _, bf16 = _paths(eager.folder, precision="bf16")  # prepacked heads, the evidence projection among them
    difference = abs(bf16.question_probabilities(study, QUESTIONS) - eager.question_probabilities(study, QUESTIONS))
    assert difference.max() < 0.05
    if importlib.util.find_spec("onnxruntime"):  # the exported tower keeps its batch norms and positions
        _, ort = _paths(eager.folder, engine="onnxruntime")
        for question in QUESTIONS:
            _close_answers(ort.answer(study, question, top_k=5), eager.answer(study, question, top_k=5), 2e-4)


def test_a_repeated_question_reuses_its_encoding_and_the_cache_stays_bounded(served):
    checkpoint, study = served
    eager, fast = _paths(checkpoint)
    fast.fast.question_cache = 2
    calls = []
    encode = fast.fast._encode_questions
    fast.fast._encode_questions = lambda ids, mask: calls.append(ids.shape) or encode(ids, mask)
    first = fast.answer(study, QUESTIONS[1])
    again = fast.answer(study, QUESTIONS[1])
    assert len(calls) == 1 and again.alternatives == first.alternatives  # the second answer read the cache
    _close_answers(again, eager.answer(study, QUESTIONS[1]), 2e-4)
    for question in QUESTIONS:  # three distinct questions through a cache of two: the first one is dropped
        fast.answer(study, question)
    assert len(fast.fast._questions) == 2 and len(calls) == 3
    fast.question_probabilities(study, QUESTIONS)  # several questions at once are encoded together, not cached
    assert calls[-1][0] == 3 and len(fast.fast._questions) == 2
    fast.fast.question_cache = 0
    fast.answer(study, QUESTIONS[2])
    assert len(calls) == 5
