"""torchxrayvision's DenseNet121 as a model source, at random weights (no download in tests)."""

import numpy as np
import pytest
import torch

from shamsul_utils import explainers
from shamsul_utils.labels import CLASSES
from shamsul_utils.models import IMAGENET_MEAN, IMAGENET_STD, from_torchxrayvision
from shamsul_utils.scoring import score_image

xrv = pytest.importorskip("torchxrayvision")
CHEX_LABELS = xrv.models.model_urls["densenet121-res224-chex"]["labels"]


@pytest.fixture(scope="module")
def networks():
    torch.manual_seed(0)
    network = xrv.models.DenseNet(weights=None).eval()  # its own random initialisation
    with torch.no_grad():
        for module in network.modules():  # non-trivial BN statistics and head, so outputs differ per class
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        network.classifier.bias.uniform_(-1, 1)
        network.features.conv0.weight.div_(1024)  # trained weights expect inputs of +-1024: keep logits O(1)
    return network, from_torchxrayvision(network, CHEX_LABELS)


def _gray(size=64, count=2):
    rows, columns = np.mgrid[:size, :size]
    gray = [(np.sin(rows / (3 + k)) * np.cos(columns / 5) + 1) / 2 for k in range(count)]
    return torch.tensor(np.stack(gray), dtype=torch.float32)


def test_same_logits_as_torchxrayvision_on_its_own_scaling(networks):
    network, model = networks
    gray = _gray()
    ours = (gray[:, None].expand(-1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) \
        / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    theirs = (2 * gray[:, None] - 1) * 1024  # torchxrayvision's scaling: [-1024, 1024], one channel
    with torch.no_grad():
        expected = network(theirs)
        got = model(ours)
    names = {"Effusion": "Pleural Effusion"}
    for index, label in enumerate(CHEX_LABELS):
        if label:
            column = CLASSES.index(names.get(label, label))
            torch.testing.assert_close(got[:, column], expected[:, index], rtol=1e-4, atol=1e-4)
    assert model.missing_classes == ("No Finding", "Pleural Other", "Support Devices")
    assert model.num_classes == len(CLASSES) == model.classifier.out_features
    assert (got[:, [CLASSES.index(name) for name in model.missing_classes]] == 0).all()


def test_all_four_explainers_and_the_scorer_run_on_it(networks):
    _, model = networks
    gray = _gray(count=1)
    images = ((gray[:, None].expand(-1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
              / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)).contiguous()
    target = [CLASSES.index("Cardiomegaly")]
    truth = np.zeros((1, 90, 70), bool)
    truth[0, 30:70, 20:50] = True
    options = {"gradcam": {}, "lrp": {"rule": "epsilon_plus_flat"}, "lime": {"num_samples": 16, "seed": 0},
               "shap": {"nsamples": 40, "seed": 0}}
    for method, kwargs in options.items():
        maps = explainers.EXPLAINERS[method](model, images, classes=target, batch_size=8, **kwargs)
        assert maps.shape == (1, 1, 64, 64) and np.isfinite(maps).all(), method
        assert np.abs(maps).max() > 0, method
        iou, gt_present, _, hit, _ = score_image(maps[0], truth)
        assert gt_present[0] and 0 <= iou[0] <= 1 and hit[0] in (0.0, 1.0), method


def test_lrp_zero_is_gradient_times_input_through_the_folded_first_layer(networks):
    _, model = networks
    model64 = model.double()
    try:
        gray = _gray(size=32, count=1).double()
        images = ((gray[:, None].expand(-1, 3, -1, -1) - torch.tensor(IMAGENET_MEAN).double().view(1, 3, 1, 1))
                  / torch.tensor(IMAGENET_STD).double().view(1, 3, 1, 1)).contiguous().requires_grad_(True)
        column = CLASSES.index("Edema")
        model64(images)[0, column].backward()
        expected = (images.grad * images).sum(1)[0].detach().numpy()
        relevance = explainers.EXPLAINERS["lrp"](model64, images.detach(), classes=[column], rule="z",
                                                 first_layer="same", stabilizer=1e-30)[0, 0]
        np.testing.assert_allclose(relevance, expected, rtol=1e-6, atol=1e-9 * np.abs(expected).max())
    finally:
        model.float()


def test_missing_classes_are_reported_not_scored():
    import pandas as pd

    from shamsul_utils import metrics
    from shamsul_utils.evaluation import score_method
    from shamsul_utils.labels import LOCALIZED_CLASSES
    from shamsul_utils.study import ExplanationSet

    rng = np.random.default_rng(0)
    labels = (rng.random((12, len(CLASSES))) < 0.5).astype(np.float32)
    probabilities = rng.random((12, len(CLASSES))).astype(np.float32)
    support = CLASSES.index("Support Devices")
    probabilities[:, support] = np.nan  # what predict_split writes for a class the model lacks
    table = metrics.auroc_auprc(labels, probabilities, class_names=CLASSES, n_resamples=10)
    row = table.set_index("class").loc["Support Devices"]
    assert np.isnan(row["auroc"]) and row["excluded"] == "not predicted by the model"
    assert "Support Devices" in table["excluded"].iloc[-1]
    masks = np.ones((12, len(LOCALIZED_CLASSES), 8, 8), bool)
    explanation = ExplanationSet(table=pd.DataFrame({"cxr_id": [str(i) for i in range(12)]}),
                                 images=torch.zeros(12, 3, 8, 8), gray=np.zeros((12, 8, 8)), labels=labels,
                                 probabilities=probabilities, masks=masks)
    scores = score_method("x", explanation, rng.random((12, len(CLASSES), 8, 8)).astype(np.float32))
    column = LOCALIZED_CLASSES.index("Support Devices")
    assert np.isnan(scores.iou[:, column]).all() and np.isnan(scores.hits[:, column]).all()
    assert not scores.gt_present[:, column].any()
    assert np.isnan(scores.selected_iou("all")[:, column]).all()  # not counted as a miss either
    assert not np.isnan(scores.selected_iou("all")[:, column - 1]).any()


def test_offline_without_cached_weights_fails_in_one_line(tmp_path, monkeypatch):
    from shamsul_utils import models
    from shamsul_utils.errors import DataError

    monkeypatch.setattr(xrv.utils, "get_cache_dir", lambda: str(tmp_path))
    monkeypatch.setattr(models, "hub_reachable", lambda *args, **kwargs: False)
    with pytest.raises(DataError, match=r"densenet121-res224-chex are not in .* github.com is not reachable"):
        models.load_torchxrayvision("densenet121-res224-chex")
    with pytest.raises(DataError, match=r"no DenseNet121 weights 'resnet50'"):
        models.load_torchxrayvision("resnet50")
