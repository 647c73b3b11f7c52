"""Training-image transforms: the per-image path's resize and light augmentations (``image_transform``), and the
nuisance augmentations for a robust oracle (train_oracle.py --robust_augment): the low-level shifts a generator
may bring (noise, colour cast, blur, grey, background shift, JPEG), drawn at random."""

import torch

from ..utils.masks import border_mask


class ChannelCast(torch.nn.Module):
    """Colour cast and gain: ``x * g_c + o_c`` per channel, with ``g_c ~ U(1 - gain, 1 + gain)`` and
    ``o_c ~ U(-offset, offset)`` (float CHW in [0, 1]); ColorJitter's brightness is one gain for all channels."""

    def __init__(self, gain: float = 0.4, offset: float = 0.2):
        super().__init__()
        self.gain, self.offset = gain, offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[-3]
        g = 1 + (torch.rand(c, 1, 1) * 2 - 1) * self.gain
        o = (torch.rand(c, 1, 1) * 2 - 1) * self.offset
        return (x * g + o).clamp(0, 1)


class BorderShift(torch.nn.Module):
    """A background shift: pull the border toward a random colour with :func:`border_mask`'s smooth weights
    (strength ``U(0, strength)``), the kind of grey or tinted background a generator may draw."""

    def __init__(self, strength: float = 0.8):
        super().__init__()
        self.strength = strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.from_numpy(border_mask(x.shape[-1])).to(x.dtype) * float(torch.rand(())) * self.strength
        colour = torch.rand(x.shape[-3], 1, 1)
        return (1 - w) * x + w * colour


def robust_augmentations(p: float = 0.3) -> list:
    """torchvision v2 steps (uint8 CHW in and out) that each apply with probability ``p``: Gaussian noise,
    colour cast and gain, colour jitter, blur, greyscale, border shift, JPEG."""
    from torchvision.transforms import v2

    def on_float(*steps):  # GaussianNoise and the custom steps want float images in [0, 1]
        return v2.Compose([v2.ToDtype(torch.float32, scale=True), *steps, v2.ToDtype(torch.uint8, scale=True)])

    noise = v2.RandomChoice([v2.GaussianNoise(sigma=s, clip=True) for s in (0.02, 0.05, 0.1)])
    return [v2.RandomApply([on_float(ChannelCast())], p=p),
            v2.RandomApply([v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05)], p=p),
            v2.RandomGrayscale(p=p),
            v2.RandomApply([on_float(BorderShift())], p=p),
            v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.5))], p=p),
            v2.RandomApply([on_float(noise)], p=p),
            v2.RandomApply([v2.JPEG(quality=(30, 90))], p=p)]


def image_transform(resolution: int, train: bool, random_flip: bool = True, translate: float = 0.0,
                    scale: float = 0.0, color_jitter: float = 0.0, robust_augment: float = 0.0):
    """PIL image -> uint8 CHW tensor at ``resolution``; with ``train``, the light augmentations asked for,
    and with ``robust_augment > 0`` the nuisance augmentations below, each with that probability."""
    from torchvision.transforms import v2

    steps = [v2.ToImage(), v2.Resize((resolution, resolution), antialias=True)]
    if train:
        if random_flip:
            steps.append(v2.RandomHorizontalFlip())
        if translate > 0 or scale > 0:
            steps.append(v2.RandomAffine(degrees=0, translate=(translate, translate) if translate > 0 else None,
                                         scale=(1 - scale, 1 + scale) if scale > 0 else None))
        if color_jitter > 0:
            steps.append(v2.ColorJitter(brightness=color_jitter, contrast=color_jitter, saturation=color_jitter))
        if robust_augment > 0:
            steps += [v2.ToDtype(torch.uint8)] + robust_augmentations(robust_augment)
    steps.append(v2.ToDtype(torch.uint8))
    return v2.Compose(steps)
