"""Class activation maps: one pass for 14 findings, Grad-CAM equivalence, geometry, scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from monai.visualize import GradCAM

from chexnet_dicom.errors import ModelError
from chexnet_dicom.model.cam import (
    cam_to_image_grid,
    class_activation_maps,
    crop_boxes,
    llr_maps,
    logits_and_cams,
    to_display,
)
from chexnet_dicom.model.card import ModelCard, Preprocessing
from chexnet_dicom.model.labels import LABELS
from chexnet_dicom.model.network import build_network, head
from chexnet_dicom.transforms import ten_crop


@pytest.fixture(scope="module")
def net() -> torch.nn.Module:
    torch.manual_seed(1234)
    n = build_network().eval()
    # A non-zero head bias, so that tests notice a bias wrongly folded into the maps.
    with torch.no_grad():
        head(n).bias.copy_(torch.linspace(-1.0, 1.0, len(LABELS)))
    return n


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randn(2, 3, 96, 96, generator=g)


def test_logits_from_the_single_pass_equal_the_network_output(
    net: torch.nn.Module, batch: torch.Tensor
) -> None:
    lin = head(net)
    with torch.inference_mode():
        expected = net(batch)
        logits, cams = logits_and_cams(net.features, lin.weight, lin.bias, batch)
    assert cams.shape == (2, len(LABELS), 3, 3)
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)
    # logit = spatial mean of the CAM + bias: the bias is not inside the map.
    torch.testing.assert_close(cams.mean(dim=(2, 3)) + lin.bias, expected, rtol=1e-5, atol=1e-5)


def test_cam_is_the_weighted_sum_of_rectified_features() -> None:
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(1, 5, 4, 4, generator=g)
    w = torch.randn(3, 5, generator=g)
    cams = class_activation_maps(feats, w)
    manual = torch.stack([sum(w[c, k] * torch.relu(feats[0, k]) for k in range(5)) for c in range(3)])
    torch.testing.assert_close(cams[0], manual)


def test_gradcam_at_the_last_feature_map_equals_cam_up_to_a_positive_scale(
    net: torch.nn.Module, batch: torch.Tensor
) -> None:
    """For GAP + linear, Grad-CAM's weights are w_c / (h*w): Grad-CAM = relu(CAM) / (h*w)."""
    x = batch[:1]
    lin = head(net)
    with torch.inference_mode():
        _, cams = logits_and_cams(net.features, lin.weight, lin.bias, x)
    h, w = cams.shape[-2:]
    identity = lambda t: t  # noqa: E731 - MONAI takes callables
    # The right layer is the head's ReLU output (what the pooling averages), not features.norm5.
    raw = GradCAM(
        nn_module=net,
        target_layers="class_layers.relu",
        upsampler=lambda _: identity,
        postprocessing=identity,
    )
    nonzero = 0
    for c in range(len(LABELS)):
        monai_map = raw(x.clone(), class_idx=c).detach()[0, 0]
        ours = torch.relu(cams[0, c]) / (h * w)
        torch.testing.assert_close(monai_map, ours, rtol=1e-4, atol=1e-7)
        nonzero += int(ours.max() > 0)
    assert nonzero >= 3  # the comparison is not between all-zero maps

    # MONAI's default output is upsampled and min-max normalised per image *and flipped*
    # (its default_normalizer maps max -> 0): that is why we never use it for display.
    default = GradCAM(nn_module=net, target_layers="class_layers.relu")
    c = int(torch.argmax(torch.relu(cams[0]).amax(dim=(1, 2))))
    monai_default = default(x.clone(), class_idx=c).detach()[0, 0]
    up = F.interpolate(
        torch.relu(cams[:, c : c + 1]), size=x.shape[-2:], mode="bilinear", align_corners=False
    )[0, 0]
    minmax = (up - up.min()) / (up.max() - up.min())
    torch.testing.assert_close(monai_default, 1.0 - minmax, rtol=1e-4, atol=1e-4)


def test_gradcam_at_norm5_is_not_cam(net: torch.nn.Module, batch: torch.Tensor) -> None:
    """Hooking the layer before the ReLU gives different (masked-gradient) weights."""
    x = batch[:1]
    lin = head(net)
    with torch.inference_mode():
        _, cams = logits_and_cams(net.features, lin.weight, lin.bias, x)
    identity = lambda t: t  # noqa: E731
    wrong = GradCAM(
        nn_module=net, target_layers="features.norm5", upsampler=lambda _: identity, postprocessing=identity
    )
    diffs = []
    for c in range(4):
        ours = torch.relu(cams[0, c]) / cams[0, c].numel()
        diffs.append(float((wrong(x.clone(), class_idx=c).detach()[0, 0] - ours).abs().max()))
    assert max(diffs) > 1e-4


def test_constant_centre_crop_map_covers_exactly_the_crop_region() -> None:
    pre = Preprocessing(resize=256, input_size=224)
    cams = np.ones((14, 7, 7), dtype=np.float32)
    out = cam_to_image_grid(cams, pre, (512, 384))
    assert out.shape == (14, 512, 384) and out.dtype == np.float32
    # The crop covers [16, 240) of 256: rows [32, 480) of 512, columns [24, 360) of 384.
    np.testing.assert_allclose(out[:, 40:470, 30:354], 1.0, atol=1e-5)
    assert np.all(out[:, :28, :] < 1e-6) and np.all(out[:, 485:, :] < 1e-6)
    assert np.all(out[:, :, :20] < 1e-6) and np.all(out[:, :, 364:] < 1e-6)


def test_a_hot_feature_cell_lands_in_the_matching_image_quadrant() -> None:
    pre = Preprocessing(resize=256, input_size=224)
    cams = np.zeros((14, 7, 7), dtype=np.float32)
    cams[3, 1, 5] = 5.0  # upper right (interior cell: edge cells are clamped flat to the crop edge)
    out = cam_to_image_grid(cams, pre, (600, 500))
    r, c = np.unravel_index(np.argmax(out[3]), out[3].shape)
    # Cell centre (1.5/7, 5.5/7) of the crop = (48, 176) + 16 -> resized frame (64, 192)
    # -> image (150, 375).
    assert abs(r - 150) <= 4 and abs(c - 375) <= 4
    assert out[3].max() <= 5.0 + 1e-5 and np.all(out[np.arange(14) != 3] == 0)


def test_tencrop_maps_are_unmirrored_and_averaged() -> None:
    """Build each crop's map from one known frame-level field: the inverse must recover it."""
    pre = Preprocessing(resize=256, input_size=224, tta="tencrop")
    yy, xx = np.mgrid[0:256, 0:256].astype(np.float32)
    field = (xx / 255.0) * 2.0 + (yy / 255.0) * 0.5  # rises left -> right, mildly downwards
    crops = ten_crop(field, 224)  # (10, 224, 224), torchvision order, mirrored ones flipped
    per_crop = F.interpolate(torch.from_numpy(crops)[:, None], size=(7, 7), mode="area")[:, 0]
    cams = np.repeat(per_crop.numpy()[:, None], 14, axis=1)  # (10, 14, 7, 7)
    out = cam_to_image_grid(cams, pre, (256, 256))[0]
    assert len(crop_boxes(pre)) == 10
    # Full coverage: TenCrop's corners reach every pixel.
    inner = out[20:236, 20:236]
    ref = field[20:236, 20:236]
    assert np.corrcoef(inner.ravel(), ref.ravel())[0, 1] > 0.99
    assert np.abs(inner - ref).max() < 0.15
    # Without un-mirroring, the left-right ramp would average out to nearly flat.
    assert out[128, 220] - out[128, 36] > 1.2


def _torch_cam_to_image_grid(cams: np.ndarray, pre: Preprocessing, shape: tuple[int, int]) -> np.ndarray:
    """The mapping written with torch's interpolate (the reference the numpy/Pillow one must equal)."""
    t = torch.as_tensor(np.asarray(cams, dtype=np.float32))
    t = t[None] if t.ndim == 3 else t
    r, s = pre.resize, pre.input_size
    up = F.interpolate(t, size=(s, s), mode="bilinear", align_corners=False)
    canvas = torch.zeros((t.shape[1], r, r))
    count = torch.zeros((1, r, r))
    for k, (top, left, mirrored) in enumerate(crop_boxes(pre)):
        canvas[:, top : top + s, left : left + s] += up[k].flip(-1) if mirrored else up[k]
        count[:, top : top + s, left : left + s] += 1.0
    canvas = torch.where(count > 0, canvas / count.clamp(min=1.0), torch.zeros(()))
    antialias = shape[0] < r or shape[1] < r
    out = F.interpolate(canvas[None], size=shape, mode="bilinear", align_corners=False, antialias=antialias)
    return out[0].numpy()


@pytest.mark.parametrize(
    ("tta", "grid", "shape"),
    [
        ("none", 2, (300, 260)),
        ("none", 2, (64, 50)),  # shrink both axes
        ("none", 2, (90, 700)),  # one axis shrinks, the other grows
        ("none", 7, (60, 200)),
        ("none", 7, (200, 60)),
        ("none", 7, (37, 41)),
        ("none", 7, (2500, 2048)),
        ("tencrop", 2, (97, 133)),
        ("tencrop", 7, (100, 3000)),
        ("none", 2, (80, 80)),  # the frame's own size
    ],
)
def test_image_grid_mapping_equals_torch_interpolate(tta: str, grid: int, shape: tuple[int, int]) -> None:
    pre = Preprocessing(resize=80, input_size=64, tta=tta)  # type: ignore[arg-type]
    rng = np.random.default_rng(len(tta) * 1000 + shape[0] + grid)
    crops = (10,) if tta == "tencrop" else ()
    cams = (10.0 * rng.standard_normal((*crops, 3, grid, grid))).astype(np.float32)
    ours = cam_to_image_grid(cams, pre, shape)
    ref = _torch_cam_to_image_grid(cams, pre, shape)
    assert ours.shape == ref.shape == (3, *shape) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=0)  # values up to ~40: float32 rounding


def test_map_shape_must_match_the_preprocessing() -> None:
    with pytest.raises(ModelError, match="tta"):
        cam_to_image_grid(np.zeros((10, 14, 7, 7)), Preprocessing(), (64, 64))
    with pytest.raises(ModelError, match="image shape"):
        cam_to_image_grid(np.zeros((14, 7, 7)), Preprocessing(), (0, 64))


def test_display_uses_the_fixed_global_scale_never_min_max() -> None:
    weak = np.full((2, 4, 4), 0.1, dtype=np.float32)
    weak[0, 1, 1] = 0.2
    shown = to_display(weak)
    assert shown.max() == pytest.approx(0.2)  # a weak map stays weak (min-max would give 1.0)
    strong = np.array([[-3.0, 0.5, 2.0, np.nan]], dtype=np.float32)
    np.testing.assert_allclose(to_display(strong), [[0.0, 0.5, 1.0, 0.0]])


def test_llr_map_averages_to_the_logit_minus_the_prior_log_odds(
    net: torch.nn.Module, batch: torch.Tensor
) -> None:
    lin = head(net)
    card = ModelCard(name="t", version="1", cam_scale=2.5)
    with torch.inference_mode():
        logits, cams = logits_and_cams(net.features, lin.weight, lin.bias, batch[:1])
    prevalence = {name: 0.02 + 0.05 * i for i, name in enumerate(LABELS)}
    llr = llr_maps(cams[0].numpy() / card.cam_scale, card, lin.bias.detach().numpy(), prevalence)
    prior = np.log(np.array(list(prevalence.values())) / (1 - np.array(list(prevalence.values()))))
    np.testing.assert_allclose(llr.mean(axis=(1, 2)), logits[0].numpy() - prior, rtol=1e-4, atol=1e-4)
    with pytest.raises(ModelError, match="prevalence"):
        llr_maps(cams[0].numpy(), card, lin.bias.detach().numpy())
    with pytest.raises(ModelError, match="between 0 and 1"):
        llr_maps(cams[0].numpy(), card, lin.bias.detach().numpy(), np.ones(14))
