"""Writes files in torch.save's zip format (torch >= 1.6) without torch, for the fixtures of
repflow's `.pt` reader: the pickle references `torch._utils._rebuild_tensor_v2` and typed
storages exactly as torch writes them (protocol 2, persistent ids
('storage', <Storage class>, key, 'cpu', numel), one `archive/data/<key>` entry per tensor).

    python3 scripts/torch_save.py    # regenerates tests/fixtures/models/*.pt
"""

import collections
import io
import pathlib
import pickle
import sys
import types
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
STORAGES = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
            np.dtype("int64"): "LongStorage", np.dtype("float16"): "HalfStorage"}


def _fake_torch():
    """Stand-ins registered as `torch` and `torch._utils`, so that pickle writes the same
    GLOBAL opcodes torch does (it checks each global is importable by its name)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise RuntimeError("fixture writer only")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    for name in STORAGES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    torch._utils = utils
    return torch, utils


class _Tensor:
    def __init__(self, key, array, rebuild):
        self.key, self.array, self.rebuild = key, array, rebuild

    def __reduce__(self):
        a = self.array
        stride = tuple(s // a.itemsize for s in a.strides)
        return (self.rebuild, (_Storage(self.key, a), 0, a.shape, stride, False,
                               collections.OrderedDict()))


class _Storage:
    def __init__(self, key, array):
        self.key, self.array = key, array


def save(path, obj):
    """torch.save(obj, path) for dicts (nested) of numpy arrays; other objects are pickled as
    they are (a class instance stands for `torch.save(model)`)."""
    torch, utils = _fake_torch()
    saved = dict(sys.modules)
    sys.modules["torch"], sys.modules["torch._utils"] = torch, utils
    try:
        blobs = {}

        def wrap(o):
            if isinstance(o, np.ndarray):
                key = str(len(blobs))
                a = np.ascontiguousarray(o)
                blobs[key] = a
                return _Tensor(key, a, utils._rebuild_tensor_v2)
            if isinstance(o, dict):
                return collections.OrderedDict((k, wrap(v)) for k, v in o.items())
            return o

        class Pickler(pickle.Pickler):
            def persistent_id(self, o):
                if isinstance(o, _Storage):
                    return ("storage", getattr(torch, STORAGES[o.array.dtype]), o.key, "cpu",
                            o.array.size)
                return None

        buf = io.BytesIO()
        Pickler(buf, protocol=2).dump(wrap(obj))
        stem = pathlib.Path(path).stem
        with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
            z.writestr(f"{stem}/data.pkl", buf.getvalue())
            z.writestr(f"{stem}/byteorder", "little")
            for key, a in blobs.items():
                z.writestr(f"{stem}/data/{key}", a.astype(a.dtype.newbyteorder("<")).tobytes())
            z.writestr(f"{stem}/version", "3\n")
    finally:
        sys.modules.clear()
        sys.modules.update(saved)


class Net:
    """What `torch.save(model)` pickles: an instance of the user's class."""

    def __init__(self, weights):
        self.weights = weights


def main():
    from safetensors.numpy import load_file
    d = ROOT / "tests" / "fixtures" / "models"
    state = load_file(str(d / "resnet18-small.safetensors"))
    # a training script's checkpoint: the state dict under `state_dict`, DataParallel names
    save(d / "resnet18-small.pt", {"state_dict": {f"module.{k}": v for k, v in state.items()},
                                   "epoch": 3})
    Net.__module__ = "__main__"
    save(d / "model-object.pt", Net({"fc.weight": np.zeros((2, 2), np.float32)}))
    print(f"wrote {d}/resnet18-small.pt and model-object.pt")


if __name__ == "__main__":
    main()
