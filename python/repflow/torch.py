"""Activations of any PyTorch model, by forward hooks, as repflow's inputs.

::

    import torchvision, repflow.torch
    net = torchvision.models.mobilenet_v3_small(weights=None).eval()
    layers = repflow.torch.extract(net, images, out="acts/mobilenet")   # {layer: stimuli x units}

``torch`` is imported here only: ``import repflow`` works without it.

The reductions are ``repflow extract``'s (``models::extract::reduce``), so a folder written
here and one written by the command line from the same weights hold the same matrices
(tested to 1e-4 on repflow's five architectures): per output of shape

- batch x units: taken as it is;
- batch x channels x height x width (convolutions): ``"center-pixel"`` (the value at
  ``(h // 2, w // 2)`` of each channel, the seed paper's), ``"mean-pool"``, ``"max-pool"``
  (over positions), ``"flatten"`` (every value, at most 65,536), ``"mean"`` (= mean-pool);
- batch x tokens x hidden (transformer blocks, their linear layers): ``"center-pixel"`` and
  ``"flatten"`` take token 0 ([CLS]), ``"mean-pool"`` / ``"max-pool"`` pool the tokens after
  it (a ViT's patch tokens), as the command line does; ``"cls"`` is token 0, ``"mean"`` the
  mean over all tokens and ``"last"`` the last token (language models) — both over the
  tokens the batch's ``attention_mask`` keeps, when batches are dicts holding one;
- batch x channels x length from an ``nn.Conv1d``: as a convolution over one axis
  (``"cls"`` / ``"last"``: the first / last position).
"""

import os
import pathlib
import tempfile

import numpy as np
import torch
from torch import nn

from . import _progress

__all__ = ["extract", "REDUCTIONS"]

#: The reductions ``extract`` knows (see the module's documentation).
REDUCTIONS = ("center-pixel", "mean-pool", "max-pool", "flatten", "cls", "mean", "last")

#: Most values per stimulus a flattened layer may have (``models::extract::FLATTEN_LIMIT``).
FLATTEN_LIMIT = 65_536


def _tensor_of(output):
    """The tensor a module's output carries: itself, the first tensor of a tuple or list, or a
    Hugging Face ``ModelOutput``'s ``last_hidden_state`` (else its first tensor)."""
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, dict):
        if isinstance(output.get("last_hidden_state"), torch.Tensor):
            return output["last_hidden_state"]
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    return None


def _token_reduce(t, how, mask, layer):
    """batch x tokens x hidden -> batch x hidden."""
    if mask is not None and mask.shape == t.shape[:2] and how in ("mean", "last"):
        keep = mask.to(t.device, torch.float32)
        if how == "mean":
            return (t * keep[:, :, None]).sum(1) / keep.sum(1).clamp(min=1)[:, None]
        # the last kept token of each row (right or left padding alike)
        index = torch.arange(t.shape[1], device=t.device)[None, :] * (keep > 0)
        return t[torch.arange(t.shape[0], device=t.device), index.argmax(1)]
    if how in ("center-pixel", "flatten", "cls"):
        return t[:, 0]
    if how == "last":
        return t[:, -1]
    if how == "mean":
        return t.mean(1)
    if t.shape[1] < 2:
        raise ValueError(f"layer `{layer}` has one token; {how} pools the tokens after the "
                         "first (hint: reduce=\"cls\" or \"mean\")")
    rest = t[:, 1:]
    return rest.mean(1) if how == "mean-pool" else rest.amax(1)


def _spatial_reduce(t, how, layer):
    """batch x channels x positions... (one or two position axes) -> batch x units."""
    axes = tuple(range(2, t.dim()))
    if how == "center-pixel":
        for a in axes:
            t = t.narrow(a, t.shape[a] // 2, 1)
        return t.flatten(1)
    if how in ("mean-pool", "mean"):
        return t.mean(axes)
    if how == "max-pool":
        return t.amax(axes)
    if how == "flatten":
        size = int(np.prod(t.shape[1:]))
        if size > FLATTEN_LIMIT:
            raise ValueError(f"layer `{layer}` has {' × '.join(map(str, t.shape[1:]))} = {size} values "
                             f"per stimulus; flatten is limited to {FLATTEN_LIMIT} (hint: reduce="
                             "\"center-pixel\", \"mean-pool\" or \"max-pool\" for this layer)")
        return t.flatten(1)
    if t.dim() == 3:  # Conv1d: first / last position
        return t[:, :, 0] if how == "cls" else t[:, :, -1]
    raise ValueError(f"layer `{layer}` is a convolution output {tuple(t.shape[1:])}; reduce="
                     f"\"{how}\" is for token outputs (hint: reduce={{\"{layer}\": \"center-pixel\"}}, "
                     "or leave the layer out with layers=[...])")


def _reduce(t, how, layer, conv1d, mask):
    """One layer's output -> batch x units, float32."""
    t = t.detach().float()
    if t.dim() == 2:
        return t
    if t.dim() == 4 or (t.dim() == 3 and conv1d):
        return _spatial_reduce(t, how, layer)
    if t.dim() == 3:
        return _token_reduce(t, how, mask, layer)
    raise ValueError(f"layer `{layer}` gives an output of shape {tuple(t.shape)}; expected "
                     "batch x units, batch x tokens x hidden or batch x channels x height x width")


def _batches(stimuli, batch):
    """(model input, labels or None, number of stimuli) per batch: slices of an array or
    tensor, or the items of an iterable (a ``DataLoader``): a tensor, a ``(input, label,
    ...)`` tuple, or a dict of keyword inputs."""
    if isinstance(stimuli, (np.ndarray, torch.Tensor)) or hasattr(stimuli, "__array__"):
        if not isinstance(stimuli, torch.Tensor):
            stimuli = np.asarray(stimuli)
        if stimuli.ndim < 1 or len(stimuli) == 0:
            raise ValueError(f"`stimuli` has shape {tuple(stimuli.shape)}: no stimuli to extract from")
        for start in range(0, len(stimuli), batch):
            x = torch.as_tensor(stimuli[start:start + batch])
            yield x, None, len(x)
        return
    try:
        items = iter(stimuli)
    except TypeError:
        raise ValueError(f"`stimuli` is a {type(stimuli).__name__}; expected an array, a tensor or an "
                         "iterable of batches (a DataLoader)") from None
    for item in items:
        labels = None
        if isinstance(item, (tuple, list)):
            item, labels = item[0], (item[1] if len(item) > 1 else None)
        if isinstance(item, dict):
            sizes = {len(v) for v in item.values() if isinstance(v, torch.Tensor)}
            if len(sizes) != 1:
                raise ValueError("a dict batch must hold tensors of one batch size")
            yield item, labels, sizes.pop()
        else:
            item = torch.as_tensor(item)
            yield item, labels, len(item)


def _default_layers(model):
    return [n for n, m in model.named_modules() if n and isinstance(m, (nn.Conv2d, nn.Linear))]


class _Sink:
    """Rows of one layer: in memory, or appended to a raw file then framed as ``.npy``."""

    def __init__(self, directory, name):
        self.name, self.units, self.rows, self.chunks = name, None, 0, []
        self.file = None
        if directory is not None:
            fd, self.part = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
            self.file = os.fdopen(fd, "wb")

    def add(self, rows):
        if self.units is None:
            self.units = rows.shape[1]
        elif rows.shape[1] != self.units:
            raise ValueError(f"layer `{self.name}` gave {rows.shape[1]} units in one batch and "
                             f"{self.units} in another (hint: pad inputs to one size, or reduce it)")
        self.rows += len(rows)
        if self.file is None:
            self.chunks.append(rows)
        else:
            self.file.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())

    def finish(self, directory):
        if self.file is None:
            return np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0), np.float32)
        self.file.close()
        target = pathlib.Path(directory) / f"{self.name}.npy"
        fd, tmp = tempfile.mkstemp(prefix=f".{self.name}.", suffix=".npy.tmp", dir=directory)
        with os.fdopen(fd, "wb") as out, open(self.part, "rb") as raw:
            np.lib.format.write_array_header_1_0(
                out, {"descr": "<f4", "fortran_order": False, "shape": (self.rows, self.units)})
            while True:
                block = raw.read(1 << 24)
                if not block:
                    break
                out.write(block)
        os.replace(tmp, target)
        os.unlink(self.part)
        return np.load(target, mmap_mode="r")

    def discard(self):
        if self.file is not None:
            self.file.close()
            os.unlink(self.part)


def _write_text(directory, name, lines):
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as f:
        f.writelines(f"{line}\n" for line in lines)
    os.replace(tmp, pathlib.Path(directory) / name)


def extract(model, stimuli, layers=None, reduce="center-pixel", batch=256, out=None, *,
            device=None, ids=None, labels=None, progress=True):
    """Runs ``model`` over ``stimuli`` in batches and returns ``{layer: stimuli x units}``
    (float32, in the order the layers first run).

    ``model``: any ``nn.Module``; it runs in evaluation mode under ``torch.inference_mode``
    and its modes are restored afterwards. ``stimuli``: an array or tensor (sliced into
    batches of ``batch`` along its first axis; float batches are given to the model in
    the model's parameters' floating dtype), or any other iterable (a ``DataLoader``, a
    list) of batches: tensors, ``(input, label)`` pairs, or dicts of keyword inputs (a
    tokenizer's). ``layers``: module names as
    ``model.named_modules()`` gives them (default: every ``nn.Conv2d`` and ``nn.Linear`` that
    runs; modules that never run are left out). ``reduce``: one of :data:`REDUCTIONS`, or a
    dict of layer -> reduction (layers it does not name take ``"center-pixel"``).
    ``device``: where the batches go (default: the model's parameters' device).

    Memory is bounded by one batch plus the reduced rows; with ``out=DIR`` the rows go to
    disk as they come and the returned arrays are memory-mapped ``DIR/<layer>.npy``. ``DIR``
    becomes a pipeline model folder (``<layer>.npy``, ``layers.txt``, ``stimuli.txt``, and
    ``labels.txt`` when labels are known), each file written whole or not at all. ``ids``
    (stimulus names for ``stimuli.txt``) default to the command line's for an array,
    ``npy/<row>``, so folders written here and by ``repflow extract`` line up. ``labels``:
    one per stimulus (default: the second item of ``(input, label)`` batches).

    Raises ``ValueError`` for an unknown layer, a layer that runs more than once per
    forward pass (its outputs would be ambiguous), a named layer that never runs, a
    reduction that does not fit a layer's output, and stimuli it cannot batch.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"`model` is a {type(model).__name__}; expected a torch.nn.Module")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"`batch` is {batch!r}; expected a positive integer")
    modules = dict(model.named_modules())
    named = layers is not None
    wanted = list(layers) if named else _default_layers(model)
    for name in wanted:
        if name not in modules or not name:
            valid = [n for n in modules if n]
            shown = ", ".join(valid[:40]) + (f", … ({len(valid)} in all)" if len(valid) > 40 else "")
            raise ValueError(f"the model has no module `{name}` (hint: its modules are: {shown})")
    if not wanted:
        raise ValueError("the model has no nn.Conv2d or nn.Linear module (hint: name the modules "
                         "to hook with layers=[...])")
    how = dict(reduce) if isinstance(reduce, dict) else {n: reduce for n in wanted}
    for name, h in how.items():
        if name not in wanted:
            raise ValueError(f"`reduce` names `{name}`, which is not among the layers extracted")
        if h not in REDUCTIONS:
            raise ValueError(f"unknown reduction `{h}` (hint: one of {', '.join(REDUCTIONS)})")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    if out is not None:
        out = pathlib.Path(out)
        out.mkdir(parents=True, exist_ok=True)

    sinks = {n: _Sink(out, n) for n in wanted}
    order, seen, state = [], set(), {"mask": None}

    def hook(name, conv1d):
        def record(_module, _inputs, output):
            if name not in sinks:  # left out: it did not run for the first batch
                return
            if name in seen:
                raise ValueError(f"layer `{name}` runs more than once per forward pass; its "
                                 "output is ambiguous (hint: hook a module that runs once)")
            seen.add(name)
            t = _tensor_of(output)
            if t is None:
                raise ValueError(f"layer `{name}` returns {type(output).__name__}, which holds no tensor")
            rows = _reduce(t, how.get(name, "center-pixel"), name, conv1d, state["mask"])
            # a copy: the next module may overwrite its input in place (ReLU(inplace=True))
            sinks[name].add(rows.to("cpu", copy=True).numpy())
            if name not in order:
                order.append(name)
        return record

    modes = [(m, m.training) for m in model.modules()]
    handles = [modules[n].register_forward_hook(hook(n, isinstance(modules[n], nn.Conv1d))) for n in wanted]
    total = len(stimuli) if hasattr(stimuli, "__len__") and not isinstance(stimuli, dict) else None
    if total is not None and hasattr(stimuli, "dataset") and hasattr(stimuli.dataset, "__len__"):
        total = len(stimuli.dataset)
    bar = _progress(total, "repflow.torch.extract") if progress else None
    count, all_labels, ok = 0, [], False
    try:
        model.eval()
        with torch.inference_mode():
            for x, y, b in _batches(stimuli, batch):
                seen.clear()
                if isinstance(x, dict):
                    state["mask"] = x.get("attention_mask")
                    model(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in x.items()})
                else:
                    model(x.to(device, dtype) if x.is_floating_point() else x.to(device))
                missing = [n for n in wanted if n not in seen]
                if count == 0 and missing and named:
                    raise ValueError(f"layer(s) {', '.join(missing)} did not run in the forward pass "
                                     "(hint: name modules the model calls)")
                if count == 0 and missing:
                    for n in missing:
                        sinks.pop(n).discard()
                    wanted = [n for n in wanted if n in sinks]
                elif count > 0 and missing:
                    raise ValueError(f"layer(s) {', '.join(missing)} ran for the first batch but "
                                     f"not for the batch at stimulus {count}")
                if y is not None:
                    all_labels += np.asarray(torch.as_tensor(y).cpu()).reshape(-1).tolist()
                count += b
                if bar is not None:
                    bar.update(b)
        ok = True
    finally:
        for h in handles:
            h.remove()
        for m, training in modes:
            m.training = training
        if bar is not None:
            bar.close()
        if not ok:
            for s in sinks.values():
                s.discard()
    try:
        if count == 0:
            raise ValueError("`stimuli` gave no batches: no stimuli to extract from")
        if not order:
            raise ValueError("no hooked layer ran in the forward pass")
        names = list(ids) if ids is not None else [f"npy/{i}" for i in range(count)]
        if len(names) != count:
            raise ValueError(f"`ids` has {len(names)} names for {count} stimuli")
        labels = list(labels) if labels is not None else (all_labels or None)
        if labels is not None and len(labels) != count:
            raise ValueError(f"`labels` has {len(labels)} entries for {count} stimuli")
    except ValueError:
        for s in sinks.values():
            s.discard()
        raise
    result = {n: sinks[n].finish(out) for n in order}
    if out is not None:
        _write_text(out, "stimuli.txt", names)
        if labels is not None:
            _write_text(out, "labels.txt", labels)
        _write_text(out, "layers.txt", order)
    return result
