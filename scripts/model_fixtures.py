"""Writes tests/fixtures/models/*.safetensors: for each architecture, fixed random weights
(torchvision parameter names), a fixed input, and PyTorch's logits and per-layer outputs in
evaluation mode. tests/models.rs checks candle's forward pass against them (tolerance 1e-4).

Needs torch and torchvision (only to regenerate the fixtures; they are committed):
    make setup-torch     # torch and torchvision, pinned in python/requirements-torch.txt
    python3 scripts/model_fixtures.py
"""

import pathlib

import torch
import torch.nn as nn
from safetensors.torch import save_file
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers
from torchvision.models.vision_transformer import VisionTransformer

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "models"
VGG_PLANS = {
    "vgg16-bn": [1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"],
    "vgg19-bn": [1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"],
}


def resnet(arch, width, in_ch, small):
    block, counts = (BasicBlock, [2, 2, 2, 2]) if arch == "resnet18" else (Bottleneck, [3, 4, 6, 3])
    m = ResNet(block, counts, num_classes=10)
    # torchvision's ResNet is built for width 64: rebuild its stages at `width`.
    m.inplanes = width
    m.conv1 = nn.Conv2d(in_ch, width, 3 if small else 7, 1 if small else 2, 1 if small else 3, bias=False)
    m.bn1 = nn.BatchNorm2d(width)
    if small:
        m.maxpool = nn.Identity()
    m.layer1 = m._make_layer(block, width, counts[0])
    m.layer2 = m._make_layer(block, 2 * width, counts[1], stride=2)
    m.layer3 = m._make_layer(block, 4 * width, counts[2], stride=2)
    m.layer4 = m._make_layer(block, 8 * width, counts[3], stride=2)
    m.fc = nn.Linear(8 * width * block.expansion, 10)
    return m


def vgg(arch, width, in_ch, small):
    plan = [p if p == "M" else p * width for p in VGG_PLANS[arch]]
    features = make_layers(plan, batch_norm=True)
    features[0] = nn.Conv2d(in_ch, width, 3, padding=1)
    if small:
        features = nn.Sequential(*list(features)[:-1])  # drop the last max-pool
        m = VGG(features, num_classes=10, init_weights=False, dropout=0.0)
        m.avgpool = nn.AdaptiveAvgPool2d(1)
        hidden = 8 * width
        m.classifier = nn.Sequential(nn.Linear(8 * width, hidden), nn.ReLU(True), nn.Dropout(0.0),
                                     nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.0), nn.Linear(hidden, 10))
    else:
        m = VGG(features, num_classes=10, init_weights=False, dropout=0.0)
        hidden = 64 * width
        m.classifier = nn.Sequential(nn.Linear(8 * width * 49, hidden), nn.ReLU(True), nn.Dropout(0.0),
                                     nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.0), nn.Linear(hidden, 10))
    return m


def vit(width, in_ch, small):
    """repflow's small ViT: 4 blocks, 4 heads, MLP 2 x hidden; 7-pixel patches of 28-pixel images
    (small stem) or torchvision's 16-pixel patches of 224-pixel images (ImageNet stem)."""
    size, patch = (28, 7) if small else (224, 16)
    m = VisionTransformer(image_size=size, patch_size=patch, num_layers=4, num_heads=4, hidden_dim=width,
                          mlp_dim=2 * width, num_classes=10)
    m.conv_proj = nn.Conv2d(in_ch, width, kernel_size=patch, stride=patch)
    return m


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    cases = [("resnet18", True, 1, 28), ("resnet18", False, 3, 64), ("resnet50", True, 1, 28),
             ("vgg16-bn", True, 1, 28), ("vgg16-bn", False, 3, 64), ("vgg19-bn", True, 1, 28)]
    cases += [("vit", True, 1, 28), ("vit", False, 3, 224)]
    for arch, small, in_ch, size in cases:
        torch.manual_seed(0)
        width = 16 if arch == "vit" else 4
        if arch == "vit":
            m = vit(width, in_ch, small)
            with torch.no_grad():
                m.class_token.normal_()
                m.encoder.pos_embedding.normal_(std=0.5)
                m.heads.head.weight.normal_(std=0.2)
        else:
            m = (resnet if arch.startswith("resnet") else vgg)(arch, width, in_ch, small)
        # Non-trivial batch-norm statistics, so evaluation mode is really tested.
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.data.uniform_(0.5, 1.5)
                mod.bias.data.uniform_(-0.2, 0.2)
        m.eval()
        x = torch.rand(1 if size > 64 else 2, in_ch, size, size)
        taps = {}
        for name, mod in m.named_modules():
            is_block = arch == "vit" and name.startswith("encoder.layers.encoder_layer_") and name.count(".") == 2
            if is_block or (arch == "vit" and name == "heads.head") or (arch != "vit" and isinstance(mod, (nn.Conv2d, nn.Linear))):
                mod.register_forward_hook(lambda _m, _i, out, name=name: taps.__setitem__(name, out.detach().clone()))
        with torch.no_grad():
            logits = m(x)
        tensors = {k: v.detach().clone().contiguous() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
        tensors["__input__"] = x
        tensors["__logits__"] = logits
        for name, out in taps.items():
            tensors[f"__tap__.{name}"] = out.contiguous()
        stem = "small" if small else "imagenet"
        save_file(tensors, str(OUT / f"{arch}-{stem}.safetensors"), metadata={"width": str(width), "layers": ",".join(taps)})
        print(arch, stem, sum(p.numel() for p in m.parameters()), "parameters,", len(taps), "layers")


if __name__ == "__main__":
    main()
