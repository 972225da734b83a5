"""Judges: shapes, overfitting tiny batches, beating the trivial baseline, determinism, checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crucible.evaluation import (
    DenseJudge,
    DenseJudgeConfig,
    EncoderConfig,
    JudgeEncoder,
    build_judge,
    evaluate_judge,
    judge_loss,
    load_judge,
    save_judge,
    train_judge,
)
from crucible.evaluation.judges import QUALITY_METRICS

N_KINDS, MAX_OBJECTS, SIZE = 4, 3, 16
PALETTE = torch.tensor([[1.0, 0.2, 0.2], [0.2, 1.0, 0.2], [0.2, 0.2, 1.0], [1.0, 1.0, 0.2]])
# the synthetic scenes' encoder heads: presence, count and one regression target (covered image fraction)
HEADS = [{"name": "presence", "type": "binary", "targets": [f"presence_{k}" for k in range(N_KINDS)]},
         {"name": "count", "type": "class", "targets": ["count"]},
         {"name": "cover", "type": "regression", "targets": ["cover_fraction"]}]


def make_scenes(n: int, seed: int) -> dict[str, torch.Tensor]:
    """Synthetic scenes with every batch key: empty sky (seg 0, depth 1, no normal) over a floor (seg 1, depth
    0.9 -> 0.3 towards the bottom, normal +y) with 0..MAX_OBJECTS camera-facing rectangles (seg 2 + kind,
    normal +z). A rectangle's colour is its kind's palette entry dimmed by its depth, so depth is learnable
    from RGB. ``targets``: presence, count and the fraction of the image the rectangles cover (``HEADS``)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(n, 3, SIZE, SIZE)
    depth = torch.ones(n, 1, SIZE, SIZE)
    normal = torch.zeros(n, 3, SIZE, SIZE)
    seg = torch.zeros(n, SIZE, SIZE, dtype=torch.long)
    h = SIZE // 2
    floor_depth = torch.linspace(0.9, 0.3, SIZE - h)[:, None]  # (rows, 1)
    depth[:, 0, h:, :] = floor_depth
    img[:, :, h:, :] = 0.5 * (1.0 - 0.8 * floor_depth)
    normal[:, 1, h:, :] = 1.0
    seg[:, h:, :] = 1
    presence = torch.zeros(n, N_KINDS)
    count = torch.randint(0, MAX_OBJECTS + 1, (n,), generator=g)
    for i in range(n):
        for _ in range(int(count[i])):
            kind = int(torch.randint(0, N_KINDS, (1,), generator=g))
            w, hh = (int(v) for v in torch.randint(3, 7, (2,), generator=g))
            x0, y0 = (int(v) for v in torch.randint(0, SIZE - 6, (2,), generator=g))
            d = float(torch.rand(1, generator=g)) * 0.5 + 0.1
            img[i, :, y0 : y0 + hh, x0 : x0 + w] = PALETTE[kind][:, None, None] * (1.0 - 0.8 * d)
            depth[i, :, y0 : y0 + hh, x0 : x0 + w] = d
            normal[i, :, y0 : y0 + hh, x0 : x0 + w] = torch.tensor([0.0, 0.0, 1.0])[:, None, None]
            seg[i, y0 : y0 + hh, x0 : x0 + w] = 2 + kind
            presence[i, kind] = 1.0
    cover = (seg >= 2).float().mean(dim=(1, 2))
    targets = torch.cat([presence, count[:, None].float(), cover[:, None]], dim=1)
    return {"image": img, "depth": depth, "normal": normal, "seg": seg, "presence": presence, "count": count,
            "targets": targets}


def _encoder(seed: int = 0) -> JudgeEncoder:
    torch.manual_seed(seed)
    return build_judge("encoder", {"width": 8, "n_stages": 2, "feat_dim": 16, "n_kinds": N_KINDS,
                                   "max_objects": MAX_OBJECTS, "heads": HEADS})  # fmt: skip


def _batches(scenes: dict, batch_size: int) -> list[dict]:
    n = len(scenes["image"])
    return [{k: v[i : i + batch_size] for k, v in scenes.items()} for i in range(0, n, batch_size)]


def _dense(kind: str, seed: int = 0) -> DenseJudge:
    torch.manual_seed(seed)
    return build_judge(kind, {"width": 8, "n_levels": 2, "n_classes": 2 + N_KINDS})


def test_encoder_shapes_config_and_per_image_features():
    torch.manual_seed(0)
    cfg = EncoderConfig.from_dict({"width": 8, "n_stages": 2, "feat_dim": 12, "n_kinds": N_KINDS})
    enc = JudgeEncoder(cfg).eval()
    x = torch.rand(5, 3, SIZE, SIZE)
    out = enc(x)
    assert (
        out["feat"].shape == (5, 12)
        and out["presence"].shape == (5, N_KINDS)
        and out["count"].shape == (5, 6)
        and out["camera"].shape == (5, 3)  # the default layout: every head of data/scene_targets.py
    )
    pred = enc.predict(x)
    assert pred["presence"].dtype == torch.bool and pred["count"].dtype == torch.long and pred["light"].shape == (5, 4)
    # GroupNorm: an image's features do not depend on the rest of the batch (batch-size invariant FID)
    torch.testing.assert_close(enc.features(x[:2]), out["feat"][:2], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown EncoderConfig key"):
        EncoderConfig.from_dict({"widht": 8})
    with pytest.raises(ValueError, match="has type 'ordinal'"):
        EncoderConfig(heads=[{"name": "count", "type": "ordinal", "targets": ["count"]}])
    with pytest.raises(ValueError, match="presence head has 4 targets for n_kinds=3"):
        EncoderConfig(n_kinds=3, heads=HEADS)
    with pytest.raises(ValueError, match="keys"):
        EncoderConfig(heads=[{"name": "count", "type": "class"}])
    # the coordinate channels and hidden head layers change the net, not its interface
    wide = JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=12, coords=True, head_hidden=5, heads=HEADS))
    assert wide(x)["cover"].shape == (5, 1) and wide.features(x).shape == (5, 12)
    with pytest.raises(ValueError):
        enc.features(torch.rand(2, 1, SIZE, SIZE))


def test_encoder_pool_grid_is_block_means_of_the_trunk_map():
    """pool_grid g: the projection sees the trunk's last map averaged over g x g blocks, flattened (C, g, g) in
    that order; g = 1 is the global mean; max_pool appends each channel's spatial maximum. Checked against block
    means and maxima computed by reshaping."""
    torch.manual_seed(0)
    x = torch.rand(3, 3, SIZE, SIZE)
    for g in (1, 2, 4):
        enc = JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=12, pool_grid=g, heads=HEADS)).eval()
        h_BCHW = x * 2 - 1
        for stage in enc.stages:
            h_BCHW = stage(h_BCHW)
        B, C, H, W = h_BCHW.shape  # 16 -> 4 after two stages
        blocks = h_BCHW.reshape(B, C, g, H // g, g, W // g).mean(dim=(3, 5)).flatten(1)
        torch.testing.assert_close(enc.features(x), enc.proj(blocks), rtol=1e-5, atol=1e-6)
        assert enc.proj.in_features == C * g * g
        # max_pool: the channels' maxima over all positions follow the block means
        enc_max = JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=12, pool_grid=g, max_pool=True,
                                             heads=HEADS)).eval()
        enc_max.stages.load_state_dict(enc.stages.state_dict())
        maxima = h_BCHW.flatten(2).max(dim=2).values  # (B, C)
        torch.testing.assert_close(enc_max.features(x), enc_max.proj(torch.cat([blocks, maxima], 1)),
                                   rtol=1e-5, atol=1e-6)
        assert enc_max.proj.in_features == C * (g * g + 1)
    with pytest.raises(ValueError, match="smaller than pool_grid=8"):
        JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=12, pool_grid=8, heads=HEADS)).features(x)
    with pytest.raises(ValueError, match="pool_grid must be >= 1"):
        EncoderConfig(pool_grid=0)


@pytest.mark.parametrize("kind", ["depth", "normal", "seg"])
def test_dense_judge_outputs(kind):
    judge = _dense(kind).eval()
    x = torch.rand(3, 3, SIZE, SIZE)
    y = judge(x)
    if kind == "depth":
        assert y.shape == (3, 1, SIZE, SIZE) and y.min() >= 0 and y.max() <= 1
    elif kind == "normal":
        torch.testing.assert_close(y.norm(dim=1), torch.ones(3, SIZE, SIZE), rtol=0, atol=1e-5)
    else:
        assert y.shape == (3, 2 + N_KINDS, SIZE, SIZE)
        assert judge.predict(x).shape == (3, SIZE, SIZE) and judge.predict(x).dtype == torch.long
    with pytest.raises(ValueError, match="divisible"):
        judge(torch.rand(1, 3, 18, 18))


def test_config_errors():
    with pytest.raises(ValueError, match="unknown DenseJudgeConfig key"):
        DenseJudgeConfig.from_dict({"kind": "depth", "levels": 2})
    with pytest.raises(ValueError, match="kind"):
        DenseJudgeConfig(kind="sketch")
    with pytest.raises(ValueError, match="does not match"):
        build_judge("depth", {"kind": "seg"})
    with pytest.raises(ValueError, match="unknown judge kind"):
        build_judge("canny")
    with pytest.raises(ValueError, match="not a 'normal' judge"):
        train_judge("normal", _dense("depth"), [], steps=1, lr=1e-3, device="cpu", progress=False)


@pytest.mark.parametrize(
    ("kind", "metric", "better_than"),
    [("depth", "rmse", 0.5), ("normal", "angular_error_deg", 0.5), ("seg", "pixel_acc", None)],
)
def test_dense_judge_overfits_a_tiny_batch(kind, metric, better_than):
    batch = make_scenes(4, seed=1)
    judge = _dense(kind)
    losses = train_judge(kind, judge, [batch], steps=150, lr=5e-3, device="cpu", progress=False)
    assert np.mean(losses[-10:]) < 0.25 * losses[0]
    q = evaluate_judge(kind, judge, [batch], depth_max=10.0)
    if better_than is not None:  # error well below the trivial per-pixel prior of the same batch
        assert q[metric] < better_than * q[f"{metric}_baseline"]
    else:
        assert q["pixel_acc"] > 0.95 and q["miou"] > q["miou_baseline"]


def test_depth_judge_beats_mean_depth_baseline_on_held_out_scenes():
    train, test = make_scenes(64, seed=2), make_scenes(32, seed=3)
    judge = _dense("depth")
    train_judge("depth", judge, _batches(train, 16), steps=200, lr=5e-3, device="cpu", progress=False)
    q = evaluate_judge("depth", judge, _batches(test, 16), train_batches=_batches(train, 16), depth_max=10.0)
    assert q["baseline_source"] == "train" and q["n_images"] == 32
    assert q["rmse"] < 0.4 * q["rmse_baseline"]  # measured: 0.035 vs 0.171 before metres/valid pixels
    with pytest.raises(ValueError, match="in metres: pass depth_max"):
        evaluate_judge("depth", judge, _batches(test, 16))


def test_encoder_overfits_every_head():
    batch = make_scenes(8, seed=4)
    enc = _encoder()
    enc.set_target_stats(batch["targets"])
    train_judge("encoder", enc, [batch], steps=200, lr=5e-3, device="cpu", progress=False)
    q = evaluate_judge("encoder", enc, [batch])
    assert q["presence_acc"] == 1.0 and q["count_acc"] == 1.0
    assert q["cover_fraction_rmse"] < 0.2 * q["cover_fraction_rmse_baseline"]
    # the baseline predicts each label's majority value / the most common count of the same 8 scenes
    pres = batch["presence"]
    majority = ((pres.mean(0) > 0.5).float() == pres).float().mean().item()
    assert math.isclose(q["presence_acc_baseline"], majority)
    assert math.isclose(q["count_acc_baseline"], torch.bincount(batch["count"]).max().item() / 8)


def test_encoder_auxiliary_segmentation():
    """seg_aux > 0: per-pixel class logits at image size from the chosen stage; the training loss adds seg_aux
    times the pixel-mean cross-entropy (checked against a log-softmax gather); the embedding and heads are those
    of the same trunk without it; a batch without seg maps is refused by name; and the segmentation learns the
    synthetic scenes' pixel classes."""
    scenes = make_scenes(8, seed=7)
    cfg = {"width": 8, "n_stages": 2, "feat_dim": 16, "n_kinds": N_KINDS, "max_objects": MAX_OBJECTS, "heads": HEADS}
    torch.manual_seed(0)
    enc = build_judge("encoder", {**cfg, "seg_aux": 2.5, "seg_stage": 0})
    plain = build_judge("encoder", cfg)
    plain.load_state_dict({k: v for k, v in enc.state_dict().items() if not k.startswith("seg_head.")})
    for m in (enc, plain):
        m.set_target_stats(scenes["targets"])
    out = enc(scenes["image"])
    assert out["seg"].shape == (8, 2 + N_KINDS, SIZE, SIZE) and "seg" not in plain(scenes["image"])
    torch.testing.assert_close(out["feat"], plain(scenes["image"])["feat"], rtol=0, atol=0)
    ce = -out["seg"].log_softmax(dim=1).gather(1, scenes["seg"][:, None]).mean()
    want = judge_loss("encoder", plain, scenes) + 2.5 * ce
    assert judge_loss("encoder", enc, scenes).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="seg_aux"):
        judge_loss("encoder", enc, {k: v for k, v in scenes.items() if k != "seg"})
    for bad in ({"seg_aux": -1.0}, {"seg_stage": 2}, {"seg_stage": -3}):
        with pytest.raises(ValueError, match="seg_stage a stage index"):
            EncoderConfig(width=8, n_stages=2, heads=HEADS, **bad)
    # it learns: the pixel accuracy of its argmax beats every pixel's majority class over the same scenes
    train_judge("encoder", enc, [scenes], steps=150, lr=5e-3, device="cpu", progress=False)
    with torch.no_grad():
        acc = (enc(scenes["image"])["seg"].argmax(1) == scenes["seg"]).float().mean().item()
    seg = scenes["seg"].numpy()
    majority = np.stack([(seg == c).sum(0) for c in range(2 + N_KINDS)]).max(0).sum() / seg.size
    assert acc > 0.95 > majority + 0.05, (acc, majority)


def test_encoder_with_seg_aux_is_unavailable_without_seg_maps():
    """A rendered split without segmentation maps trains the encoder with seg_aux 0 and names the key otherwise."""
    from pathlib import Path

    from crucible.evaluation.judges.fit import unavailable_reason

    class Split:  # the attributes unavailable_reason reads of a SplitTensors
        path, conditions, classes = Path("x/train.safetensors"), ["canny", "depth"], ["background", "floor", "cube"]
        raw = {"count": torch.tensor([1, 2])}

        def __len__(self):
            return 2

    cfg = {"data": {"target": "depth"}, "judges": {"encoder": {"seg_aux": 20.0}}}
    why = unavailable_reason(cfg, "encoder", Split())
    assert "no seg maps in the train split" in why and "judges.encoder.seg_aux" in why
    cfg["judges"]["encoder"]["seg_aux"] = 0.0
    assert unavailable_reason(cfg, "encoder", Split()) is None


def test_encoder_loss_and_scores_of_a_constant_predictor_are_analytic():
    """Zeroed heads: logits 0, uniform count, the train mean for the regression target. Each head's loss is its
    trivial value over the head's norm, and every score against its baseline is known by hand."""
    enc = _encoder()
    for p in enc.heads.parameters():
        torch.nn.init.zeros_(p)
    # 4 scenes: presence labels per kind, counts 2, 2, 3, 1, covered fractions 0, 2, 4, 6 (mean 3, RMSE sqrt 5)
    presence = torch.tensor([[1, 0, 1, 0], [1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.float32)
    targets = torch.cat([presence, torch.tensor([[2.0], [2.0], [3.0], [1.0]]), torch.tensor([[0.0], [2], [4], [6]])],
                        dim=1)
    batch = {"image": torch.rand(4, 3, SIZE, SIZE), "targets": targets}
    enc.set_target_stats(targets)
    p = presence.mean(0)  # label frequencies 3/4, 1/4, 1/2, 0 -> entropies; the constant label is floored
    entropy = -(p * p.clamp_min(1e-6).log() + (1 - p) * (1 - p).clamp_min(1e-6).log())
    count_entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    torch.testing.assert_close(enc.head_norm, torch.tensor([entropy.mean().item(), count_entropy, 1.0]))
    # BCE at logit 0 is ln 2 per label, CE of uniform logits ln 4, standardised MSE of the mean 1
    want = math.log(2) / entropy.mean().item() + math.log(MAX_OBJECTS + 1) / count_entropy + 1.0
    assert judge_loss("encoder", enc, batch).item() == pytest.approx(want, rel=1e-5)
    q = evaluate_judge("encoder", enc, [batch], train_batches=[batch])
    # logit 0 predicts "absent"; the majority is (1, 0, 0 or 1, 0): ties at 1/2 go to absent
    assert q["presence_acc"] == pytest.approx(1 - presence.mean().item())
    assert q["presence_acc_baseline"] == pytest.approx((3 + 3 + 2 + 4) / 16)
    assert q["count_acc"] == 0.0 and q["count_acc_baseline"] == 0.5  # argmax of equal logits: class 0; majority 2
    assert q["cover_fraction_rmse"] == pytest.approx(math.sqrt(5)) and q["cover_fraction_rmse_baseline"] == (
        pytest.approx(math.sqrt(5)))
    assert set(q) - {"kind", "n_images", "baseline_source"} == {
        "presence_acc", "presence_acc_baseline", "count_acc", "count_acc_baseline", "cover_fraction_rmse",
        "cover_fraction_rmse_baseline"}


def test_encoder_quality_metrics_list_every_default_head():
    enc = JudgeEncoder(EncoderConfig(width=8, n_stages=2, feat_dim=8, n_kinds=5))
    scenes = {"image": torch.rand(3, 3, SIZE, SIZE), "targets": torch.rand(3, len(enc.target_names))}
    scenes["targets"][:, enc.columns["count"]] = torch.tensor([[1.0], [2.0], [5.0]])
    q = evaluate_judge("encoder", enc, [scenes])
    assert [k for k in q if k not in ("kind", "n_images", "baseline_source")] == list(QUALITY_METRICS["encoder"])


def test_evaluate_baselines_match_independent_computation():
    scenes = make_scenes(12, seed=5)
    q = evaluate_judge("depth", _dense("depth"), _batches(scenes, 5), depth_max=10.0)
    d = scenes["depth"].numpy().astype(np.float64)
    # predicting the per-pixel mean of the same images, scored in metres on the valid pixels (depth < 1) only
    valid = d < 1.0
    expect = 10.0 * math.sqrt(((d - d.mean(axis=0)) ** 2)[valid].mean())
    assert math.isclose(q["rmse_baseline"], expect, rel_tol=1e-6)  # the prior map is stored in float32
    q = evaluate_judge("seg", _dense("seg"), _batches(scenes, 5))
    seg = scenes["seg"].numpy()
    counts = np.stack([(seg == c).sum(0) for c in range(2 + N_KINDS)])  # (C, H, W)
    assert math.isclose(q["pixel_acc_baseline"], counts.max(0).sum() / seg.size, rel_tol=1e-12)


def test_train_judge_is_deterministic_under_a_seed():
    batches = _batches(make_scenes(8, seed=6), 4)
    runs = []
    for _ in range(2):
        judge = _dense("seg", seed=123)
        losses = train_judge("seg", judge, batches, steps=6, lr=1e-3, device="cpu", progress=False)
        runs.append((losses, judge.state_dict()))
    assert runs[0][0] == runs[1][0]
    for k, v in runs[0][1].items():
        assert torch.equal(v, runs[1][1][k]), k


def test_save_load_round_trip_of_an_encoder_with_segmentation(tmp_path):
    torch.manual_seed(0)
    enc = build_judge("encoder", {"width": 8, "n_stages": 2, "feat_dim": 16, "n_kinds": N_KINDS,
                                  "max_objects": MAX_OBJECTS, "heads": HEADS, "seg_aux": 3.0}).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    out = enc(x)
    assert enc.seg_head.in_channels == 16  # seg_stage -1: the last stage's map (width 8 doubled once)
    torch.testing.assert_close(enc.features(x), out["feat"], rtol=0, atol=0)
    save_judge(tmp_path / "enc.safetensors", "encoder", enc)
    kind, loaded = load_judge(tmp_path / "enc.safetensors")
    assert kind == "encoder" and loaded.cfg.seg_aux == 3.0 and loaded.cfg.seg_stage == -1
    for key, value in loaded(x).items():
        torch.testing.assert_close(value, out[key], rtol=0, atol=0)


def test_save_load_round_trip(tmp_path):
    judge = _dense("normal").eval()
    path = tmp_path / "normal.safetensors"
    save_judge(path, "normal", judge, extra_metadata={"test_error": 12.5})
    kind, loaded = load_judge(path)
    x = torch.rand(2, 3, SIZE, SIZE)
    assert kind == "normal" and loaded.cfg == judge.cfg and not loaded.training
    torch.testing.assert_close(loaded(x), judge(x), rtol=0, atol=0)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a crucible judge"):
        load_judge(tmp_path / "other.safetensors")
