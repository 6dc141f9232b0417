"""`repflow.torch.extract` (forward hooks) against `repflow extract` (candle) on repflow's own
architectures, on a torchvision network repflow does not have, and on its error cases.

Needs torch and torchvision (`make setup-torch`); skipped without them, except under CI
(`CI` set), where a missing torch fails."""

import importlib.util
import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

if os.environ.get("CI"):
    import torch
    import torchvision
else:
    torch = pytest.importorskip("torch")
    torchvision = pytest.importorskip("torchvision")
from torch import nn

import repflow
import repflow.torch as rt

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("REPFLOW_BIN", str(ROOT / "target" / "release" / "repflow"))


def _builders():
    """scripts/model_fixtures.py: repflow's architectures built from torchvision's classes."""
    spec = importlib.util.spec_from_file_location("model_fixtures", ROOT / "scripts" / "model_fixtures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _network(arch, seed=0):
    """Random weights with non-trivial batch-norm statistics (so evaluation mode matters)."""
    b = _builders()
    torch.manual_seed(seed)
    if arch == "vit":
        m = b.vit(16, 1, True)
        with torch.no_grad():
            m.class_token.normal_()
            m.encoder.pos_embedding.normal_(std=0.5)
    else:
        m = (b.resnet if arch.startswith("resnet") else b.vgg)(arch, 4, 1, True)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
    return m


def _images(n=24, c=1, size=28, seed=0):
    return np.random.default_rng(seed).random((n, c, size, size), dtype=np.float32)


def _cli_extract(tmp_path, arch, checkpoint, images, reduce, width):
    np.save(tmp_path / "images.npy", images)
    out = tmp_path / f"cli-{reduce}"
    done = subprocess.run([BIN, "extract", "--arch", arch, "--width", str(width), "--checkpoint",
                           str(checkpoint), "--stimuli", str(tmp_path / "images.npy"), "--reduce",
                           reduce, "--batch", "10", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    names = (out / "layers.txt").read_text().split()
    return {n: np.load(out / f"{n}.npy") for n in names}, out


@pytest.mark.parametrize("arch", ["resnet18", "resnet50", "vgg16-bn", "vgg19-bn", "vit"])
def test_hooks_give_repflow_extracts_matrices_on_its_architectures(tmp_path, arch):
    net = _network(arch)
    state = net.state_dict()
    if arch == "resnet18":  # as DataParallel checkpoints are saved
        state = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    torch.save(state, tmp_path / "net.pt")  # the real torch.save, read by candle
    images = _images()
    width = 16 if arch == "vit" else 4
    # repflow's ViT layers are its blocks and head; the CNNs' every conv and linear layer
    layers = ([f"encoder.layers.encoder_layer_{i}" for i in range(4)] + ["heads.head"]
              if arch == "vit" else None)
    for reduce in (["center-pixel", "mean-pool", "max-pool", "flatten"] if arch == "resnet18"
                   else ["center-pixel", "mean-pool"]):
        want, folder = _cli_extract(tmp_path, arch, tmp_path / "net.pt", images, reduce, width)
        got = rt.extract(net, images, layers=layers, reduce=reduce, batch=10, progress=False)
        assert list(got) == list(want), (reduce, list(got), list(want))
        for name in want:
            assert got[name].shape == want[name].shape, (reduce, name)
            scale = max(1.0, float(np.abs(want[name]).max()))
            assert np.abs(got[name] - want[name]).max() <= 1e-4 * scale, (reduce, name)
    # and the folders line up: same stimulus ids as the command line's
    rt.extract(net, images, layers=layers, out=tmp_path / "hooked", progress=False)
    assert (tmp_path / "hooked" / "stimuli.txt").read_text() == (folder / "stimuli.txt").read_text()
    assert (tmp_path / "hooked" / "layers.txt").read_text() == (folder / "layers.txt").read_text()


def test_a_pickled_model_object_is_refused_by_the_cli_with_what_to_do(tmp_path):
    net = _network("resnet18")
    torch.save(net, tmp_path / "whole.pt")
    np.save(tmp_path / "images.npy", _images(4))
    done = subprocess.run([BIN, "extract", "--arch", "resnet18", "--width", "4", "--checkpoint",
                           str(tmp_path / "whole.pt"), "--stimuli", str(tmp_path / "images.npy"),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert done.returncode == 2
    assert "state_dict" in done.stderr and "whole.pt" in done.stderr, done.stderr


def test_a_torchvision_mobilenet_is_hooked_and_audited(tmp_path):
    """MobileNetV3 (random weights; repflow has no such architecture): every Conv2d and
    Linear hooked, values as the module computes them, and a pipeline over two seeds."""
    images = _images(60, c=3, size=32, seed=1)
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = torchvision.models.mobilenet_v3_small(weights=None, num_classes=10)
        layers = rt.extract(net, images, batch=16, out=tmp_path / "data" / f"mobilenet_s{seed}",
                            progress=False)
        convs = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert list(layers) == convs and len(convs) == 54
        assert all(a.shape[0] == 60 and np.isfinite(a).all() for a in layers.values())
        assert isinstance(layers["features.0.0"], np.memmap)
        with torch.no_grad():  # the first conv by hand: its output's centre pixel
            net.eval()
            first = net.features[0][0](torch.from_numpy(images))
        np.testing.assert_allclose(layers["features.0.0"], first[:, :, 8, 8].numpy(), rtol=1e-6, atol=1e-6)
        assert layers["classifier.3"].shape == (60, 10)
    p = tmp_path / "mobilenet.toml"
    p.write_text(f'name = "mobilenet"\nresults = "{tmp_path / "out"}"\n'
                 'models = ["mobilenet_s0", "mobilenet_s1"]\nlayers = "matched"\n'
                 'metrics = ["procrustes", "cka"]\n\n[source]\ndir = "data"\n')
    summary = repflow.run(p, cache=tmp_path / "cache")
    assert summary["failed"] == 0, summary
    rows = repflow.results(tmp_path / "out")["scores"]
    assert len(rows) == 2 * 54
    assert all(r["score"] is not None and np.isfinite(r["score"]) for r in rows)


def test_batches_and_data_loaders_give_the_same_rows(tmp_path):
    net = _network("resnet18", seed=2)
    images = _images(30, seed=2)
    labels = np.arange(30) % 10
    whole = rt.extract(net, images, batch=64, progress=False)
    small = rt.extract(net, torch.from_numpy(images).double(), batch=7, progress=False)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(torch.from_numpy(images), torch.from_numpy(labels)), batch_size=11)
    loaded = rt.extract(net, loader, out=tmp_path / "loaded", ids=[f"img{i}" for i in range(30)],
                        progress=False)
    for name in whole:
        np.testing.assert_allclose(small[name], whole[name], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(loaded[name], whole[name], rtol=1e-5, atol=1e-5)
    assert (tmp_path / "loaded" / "labels.txt").read_text().split() == [str(v) for v in labels]
    assert (tmp_path / "loaded" / "stimuli.txt").read_text().split()[:2] == ["img0", "img1"]
    # files are whole: nothing half-written is left beside them
    assert not [f for f in os.listdir(tmp_path / "loaded") if f.startswith(".")]
    assert net.training  # the model's mode is restored


class _Tokens(nn.Module):
    """A toy language model: embedding, then a linear layer per token."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(20, 6)
        self.proj = nn.Linear(6, 5)

    def forward(self, input_ids, attention_mask=None):
        return self.proj(self.embed(input_ids))


def test_token_reductions_respect_the_attention_mask():
    model = _Tokens()
    ids = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 7, 8], [0, 0, 9, 10, 11]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with torch.no_grad():
        full = model(ids).numpy()
    batches = [{"input_ids": ids, "attention_mask": mask}]
    keep = mask.numpy().astype(bool)
    mean = rt.extract(model, batches, layers=["proj"], reduce="mean", progress=False)["proj"]
    np.testing.assert_allclose(mean, [full[i][keep[i]].mean(0) for i in range(3)], rtol=1e-6)
    last = rt.extract(model, batches, layers=["proj"], reduce="last", progress=False)["proj"]
    np.testing.assert_allclose(last, full[[0, 1, 2], [2, 4, 4]], rtol=1e-6)
    cls = rt.extract(model, batches, layers=["proj"], reduce="cls", progress=False)["proj"]
    np.testing.assert_allclose(cls, full[:, 0], rtol=1e-6)
    unmasked = rt.extract(model, [ids], layers=["proj"], reduce="mean", progress=False)["proj"]
    np.testing.assert_allclose(unmasked, full.mean(1), rtol=1e-6)
    patches = rt.extract(model, [ids], layers=["proj"], reduce="mean-pool", progress=False)["proj"]
    np.testing.assert_allclose(patches, full[:, 1:].mean(1), rtol=1e-6)


def test_conv1d_outputs_reduce_over_their_positions():
    conv = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1))
    x = np.random.default_rng(0).random((4, 2, 9), dtype=np.float32)
    with torch.no_grad():
        full = conv(torch.from_numpy(x)).numpy()
    got = rt.extract(conv, x, layers=["0"], progress=False)["0"]
    np.testing.assert_allclose(got, full[:, :, 4], rtol=1e-6)
    got = rt.extract(conv, x, layers=["0"], reduce="mean-pool", progress=False)["0"]
    np.testing.assert_allclose(got, full.mean(2), rtol=1e-6)


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        return self.shared(self.shared(x))


def test_bad_requests_raise_value_error_and_leave_the_model_as_it_was(tmp_path):
    net = _network("resnet18")
    images = _images(6)
    cases = [
        (dict(layers=["layer9.conv1"]), "no module `layer9.conv1`"),
        (dict(reduce="last"), 'reduce="last" is for token outputs'),
        (dict(reduce="median"), "unknown reduction `median`"),
        (dict(reduce={"nope": "mean"}), "`reduce` names `nope`"),
        (dict(batch=0), "`batch` is 0"),
    ]
    for kwargs, text in cases:
        with pytest.raises(ValueError) as e:
            rt.extract(net, images, out=tmp_path / "bad", progress=False, **kwargs)
        assert text in str(e.value), str(e.value)
        assert all(not m._forward_hooks for m in net.modules())
        assert net.training
    # nothing was written by the failed runs
    assert not (tmp_path / "bad").exists() or not os.listdir(tmp_path / "bad")
    with pytest.raises(ValueError, match="more than once per forward pass"):
        rt.extract(_Twice(), np.zeros((3, 4), np.float32), layers=["shared"], progress=False)
    with pytest.raises(ValueError, match="did not run"):
        rt.extract(_Twice(), np.zeros((3, 4), np.float32), layers=["unused"], progress=False)
    with pytest.raises(ValueError, match="no stimuli"):
        rt.extract(net, np.zeros((0, 1, 28, 28), np.float32), progress=False)
    with pytest.raises(ValueError, match="expected a torch.nn.Module"):
        rt.extract(lambda x: x, images, progress=False)
    with pytest.raises(ValueError, match="flatten is limited"):
        big = nn.Sequential(nn.Conv2d(1, 128, 3, padding=1))
        rt.extract(big, _images(2, size=28), reduce="flatten", progress=False)
    with pytest.raises(ValueError, match="`ids` has 2 names for 6 stimuli"):
        rt.extract(net, images, ids=["a", "b"], out=tmp_path / "ids", progress=False)
    assert not [f for f in os.listdir(tmp_path / "ids")]
    # by default a module that never runs is left out, not an error
    once = nn.Sequential()
    once.used, once.unused = nn.Linear(4, 3), nn.Linear(4, 3)
    once.forward = lambda x: once.used(x)
    assert list(rt.extract(once, np.zeros((3, 4), np.float32), progress=False)) == ["used"]
