"""The MVCM model: factory, shapes, views, adapters, gradients."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_OVERRIDES, random_batch

from mvcm_core.config import ModelCfg
from mvcm_core.factory import create_model, get_model_config, list_models
from mvcm_core.models.adapters import count_parameters, insert_adapters
from mvcm_core.models.text import TextEncoder


def test_registry_and_config_round_trip():
    assert {"mvcm-tiny", "mvcm-base"} <= set(list_models())
    cfg = get_model_config("mvcm-tiny", {"vision": {"image_size": 96}})
    assert cfg.vision.image_size == 96 and ModelCfg.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown keys in 'vision'"):
        ModelCfg.from_dict({"vision": {"imagesize": 96}})
    with pytest.raises(ValueError, match="unknown model"):
        get_model_config("no-such-model")


def test_forward_shapes_and_masks(tiny_model):
    cfg = tiny_model.cfg
    out = tiny_model(random_batch(cfg), frozenset({"mim"}), mask_ratio=0.5)
    n_patches = (cfg.vision.image_size // 16) ** 2
    assert out["image_embeds"].shape == (4, 16) and out["text_embeds"].shape == (4, 16)
    assert torch.allclose(out["image_embeds"].norm(dim=-1), torch.ones(4), atol=1e-5)
    assert out["view_embeds"].shape == (4, 2, 16)
    kept = max(1, round(n_patches * 0.5))
    assert out["image_tokens"].shape == (4, 2 * (1 + kept), 32)
    # the last study has no lateral: only its missing-view token is visible in that slot
    assert out["image_token_mask"][3].tolist() == [True] * (1 + kept) + [True] + [False] * kept
    assert out["mim_pred"].shape == out["mim_target"].shape == (8, n_patches, 256)
    assert out["mim_mask"][7].sum() == 0 and out["mim_mask"][0].sum() == n_patches - kept


def test_missing_view_token_changes_the_study_but_not_the_frontal(tiny_model):
    cfg = tiny_model.cfg
    tiny_model.eval()
    batch = random_batch(cfg)
    both = tiny_model(batch)
    batch["view_mask"] = torch.tensor([[True, False]] * 4)
    frontal_only = tiny_model(batch)
    assert torch.allclose(both["view_embeds"][:, 0], frontal_only["view_embeds"][:, 0], atol=1e-6)
    assert not torch.allclose(both["image_embeds"], frontal_only["image_embeds"])


def test_gradients_reach_both_encoders_when_trainable():
    torch.manual_seed(0)
    overrides = {**TINY_OVERRIDES, "text": {**TINY_OVERRIDES["text"], "trainable": "full"}}
    model = create_model("mvcm-tiny", overrides)
    out = model(random_batch(model.cfg))
    (out["image_embeds"] * out["text_embeds"]).sum().backward()
    assert model.vision.trunk.patch_embed.proj[0].weight.grad.abs().sum() > 0  # first conv of the stem
    assert model.text.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_zero_initialised_adapters_start_as_identity_and_train_a_small_fraction():
    torch.manual_seed(0)
    frozen = TextEncoder(ModelCfg.from_dict(TINY_OVERRIDES).text)
    adapted = copy.deepcopy(frozen)
    paths = [f"encoder.layer.0.{leaf}" for leaf in ("attention.output.dense", "output.dense")]
    adapters = insert_adapters(adapted.bert, paths, bottleneck=8)
    frozen.eval(), adapted.eval()
    ids, mask = torch.randint(1000, 5000, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    assert torch.equal(frozen(ids, mask), adapted(ids, mask))  # zero-initialised: exactly the base model
    with torch.no_grad():
        adapters[0].up.weight.normal_(0.0, 0.1)  # (a constant bias would vanish in the LayerNorm)
    assert not torch.allclose(frozen(ids, mask), adapted(ids, mask))


def test_adapter_mode_trains_only_adapters_and_norms():
    cfg = ModelCfg.from_dict(TINY_OVERRIDES).text
    cfg.trainable = "adapters"
    encoder = TextEncoder(cfg)
    trainable, total = count_parameters(encoder)
    assert 0 < trainable < 0.5 * total
    assert all("adapter" in n or "LayerNorm" in n for n, p in encoder.named_parameters() if p.requires_grad)


def test_frozen_text_encoder_is_deterministic_in_train_mode(tiny_model):
    tiny_model.train()
    ids, mask = torch.randint(1000, 5000, (2, 8)), torch.ones(2, 8, dtype=torch.long)
    assert torch.equal(tiny_model.text(ids, mask), tiny_model.text(ids, mask))  # no dropout in a frozen base


def test_itm_and_mlm_heads(tiny_model):
    cfg = tiny_model.cfg
    batch = random_batch(cfg)
    out = tiny_model(batch)
    logits = tiny_model.itm_logits(out["text_tokens"], out["text_token_mask"], out["image_tokens"],
                                   out["image_token_mask"])
    assert logits.shape == (4, 2)
    selected = torch.zeros(4, 12, dtype=torch.bool)
    selected[:, 3] = True
    mlm = tiny_model.mlm_logits(batch["input_ids"], batch["attention_mask"], out["image_tokens"],
                                out["image_token_mask"], selected)
    assert mlm.shape == (1, 4, tiny_model.text.word_embeddings.num_embeddings)


@pytest.mark.slow
def test_named_tiny_model_builds_with_the_packaged_minilm():
    model = create_model("mvcm-tiny")
    trainable, total = count_parameters(model)
    assert model.text.width == 384 and trainable < total  # the text encoder is frozen
    out = model(random_batch(model.cfg, batch=2))
    assert out["text_tokens"].shape == (2, 12, 256)


def test_image_encoder_loads_pretrained_weights_from_a_local_file(tmp_path):
    import timm
    from safetensors.torch import save_file

    from mvcm_core.config import VisionCfg
    from mvcm_core.models.vision import ImageEncoder

    source = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=32, depth=1)
    save_file(source.state_dict(), str(tmp_path / "weights.safetensors"))
    cfg = VisionCfg(image_size=32, timm_kwargs={"depth": 1}, pretrained=str(tmp_path))
    encoder = ImageEncoder(cfg)
    assert torch.equal(encoder.trunk.patch_embed.proj.weight, source.patch_embed.proj.weight)
    with pytest.raises(FileNotFoundError):
        ImageEncoder(VisionCfg(image_size=32, timm_kwargs={"depth": 1}, pretrained=str(tmp_path / "missing.pth")))


def test_base_config_names_a_vit_b16_and_a_clinical_bert_by_hub_id():
    cfg = get_model_config("mvcm-base")
    assert cfg.vision.timm_name == "vit_base_patch16_224" and cfg.vision.pretrained is True
    assert cfg.text.hf_name == "emilyalsentzer/Bio_ClinicalBERT" and cfg.text.trainable == "adapters"


def test_conv_stem_keeps_dropped_patches_out_of_the_visible_tokens():
    model = create_model("mvcm-tiny", TINY_OVERRIDES).eval()
    encoder = model.vision
    assert encoder.conv_stem and encoder.num_patches == 4  # 32 px, total stride 16
    images = torch.randn(1, 1, 32, 32)
    keep_ids = torch.tensor([[0, 3]])  # top-left and bottom-right patches kept
    altered = images.clone()
    altered[:, :, :16, 16:] += 5.0  # top-right patch: dropped
    with torch.no_grad():
        assert torch.allclose(encoder(images, keep_ids), encoder(altered, keep_ids), atol=1e-6)
        assert not torch.allclose(encoder(images), encoder(altered), atol=1e-3)  # unmasked: it is seen


def test_conv_stem_depth_must_match_the_patch_size():
    overrides = copy.deepcopy(TINY_OVERRIDES)
    overrides["vision"]["conv_stem"] = [8, 16]
    with pytest.raises(ValueError, match="conv_stem"):
        create_model("mvcm-tiny", overrides)
