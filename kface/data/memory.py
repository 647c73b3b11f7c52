"""In-memory training data (``--in_memory``): decode a split once into a uint8 tensor, augment whole batches.

The per-image path (kface.train.setup.image_loaders) decodes a PNG, resizes it and runs the torchvision v2
augmentations image by image, in Python, on every step: at 32 px that costs far more than the copy of the
pixels. A 32 px face set is small (3 KB per crop: 10,000 crops are 30 MB), so here each split is decoded once,
through the same resize as the per-image path (so the pixels are identical with augmentation off), into one
uint8 NCHW tensor, kept on the training device when the loader runs in the main process. A batch is then one
index into that tensor, and the light augmentations (flip, integer translation + scale, colour jitter) run on
the whole batch at once, on the device, with per-image random parameters drawn as torchvision v2 draws them
(``RandomHorizontalFlip``, ``RandomAffine(degrees=0, translate, scale)``, ``ColorJitter``) and applied with
the same arithmetic as its tensor kernels; tests/test_memory_loader.py checks both against torchvision.

The loader is an ordinary map-style ``DataLoader`` with the same length, batch size and sampler as the
per-image one, so ``accelerate.prepare`` shards it the same way (each rank its own batches, the same number of
batches per epoch) and ``skip_first_batches`` resumes it mid-epoch. Random draws come from torch's default
generator of the data's device, which ``set_seed`` seeds and accelerate checkpoints, as for the per-image path.
"""

import logging

import torch

from .preprocess.decode import to_rgb8

logger = logging.getLogger(__name__)


def decode_split(dataset, resolution: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8 NCHW images, int64 labels) of a Dataset with ``image`` and ``label`` columns, resized as the
    per-image path resizes (kface.data.augment.image_transform without augmentation)."""
    from .augment import image_transform

    transform = image_transform(resolution, train=False)
    images = torch.empty((len(dataset), 3, resolution, resolution), dtype=torch.uint8)
    labels = torch.empty(len(dataset), dtype=torch.long)
    start = 0
    for rows in dataset.iter(batch_size=1024):
        for k, (img, label) in enumerate(zip(rows["image"], rows["label"])):
            images[start + k] = transform(to_rgb8(img))
            labels[start + k] = int(label)
        start += len(rows["label"])
    return images, labels


# ---- batched augmentations: explicit-parameter kernels (tested against torchvision) and their draws

def flip(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror (left-right) the images where ``mask`` is true."""
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def affine(images: torch.Tensor, tx: torch.Tensor, ty: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Per-image translation (px) and scale about the centre, nearest neighbour, zero fill: the batched form of
    torchvision v2 ``affine(img, angle=0, translate=[tx, ty], scale=s, shear=[0, 0])`` for uint8 images.

    torchvision builds one sampling grid per call, so a batch with per-image parameters would take one
    call per image; here the inverse matrices are stacked and the grid is built once (same maths as its
    ``_get_inverse_affine_matrix`` and ``_affine_grid``: pixel-centred base grid, normalised by half the size).
    """
    n, _, h, w = images.shape
    dev = images.device
    # inverse of "scale then translate" with no rotation or shear: x_in = (x_out - t) / s, in float64 as
    # torchvision computes it, then float32 as its theta tensor is
    inv = 1.0 / scale.double()
    theta = torch.zeros(n, 2, 3, dtype=torch.float64, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = inv, inv
    theta[:, 0, 2], theta[:, 1, 2] = -tx.double() * inv, -ty.double() * inv
    theta = theta.float()
    base = torch.empty(1, h, w, 3, dtype=torch.float32, device=dev)
    base[..., 0].copy_(torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, steps=w, device=dev))
    base[..., 1].copy_(torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, steps=h, device=dev).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2) / torch.tensor([0.5 * w, 0.5 * h], dtype=torch.float32, device=dev)
    grid = base.view(1, h * w, 3).expand(n, -1, -1).bmm(rescaled).view(n, h, w, 2)
    out = torch.nn.functional.grid_sample(images.float(), grid, mode="nearest", padding_mode="zeros",
                                          align_corners=False)
    return out.round_().to(torch.uint8)


def _grey(x: torch.Tensor) -> torch.Tensor:
    # torchvision's rgb_to_grayscale weights, floored for uint8 input as its contrast/saturation kernels do
    r, g, b = x.unbind(dim=-3)
    return r.mul(0.2989).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(-3).floor_()


def _blend(x: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    # torchvision's _blend for uint8: x * r + other * (1 - r), clamped, truncated back to uint8 (values kept
    # in float here between steps, then truncated after each step as torchvision does)
    alpha = (1.0 - ratio.double()).float()
    return (x * ratio + other * alpha).clamp_(0, 255).trunc_()


def color_jitter(images: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor,
                 order: torch.Tensor) -> torch.Tensor:
    """Per-image brightness, contrast and saturation factors applied in a per-image ``order`` (rows of a
    permutation of 0, 1, 2 = brightness, contrast, saturation), as torchvision v2 ``ColorJitter`` applies them."""
    x = images.float()
    view = (-1, 1, 1, 1)
    factors = torch.stack([brightness, contrast, saturation]).float()
    # the images that share an order (6 at most) go through their three steps together: 3 steps per image
    # (not 9, as computing all three at every position would); the .tolist() is one device sync per batch
    perms, group = torch.unique(order, dim=0, return_inverse=True)
    for k, perm in enumerate(perms.tolist()):
        idx = (group == k).nonzero().squeeze(1)
        sub = x[idx]
        for step in perm:
            f = factors[step, idx].view(view)
            if step == 0:
                sub = (sub * f).clamp_(0, 255).trunc_()
            elif step == 1:
                sub = _blend(sub, _grey(sub).mean(dim=(-3, -2, -1), keepdim=True), f)
            else:
                sub = _blend(sub, _grey(sub), f)
        x[idx] = sub
    return x.to(torch.uint8)


class BatchAugment:
    """The training augmentations of one uint8 NCHW batch, each image with its own random parameters, drawn
    as torchvision v2 draws them (see the module docstring); ``robust_augment > 0``: then kface.data.augment's
    per-image transforms, on the CPU (JPEG and the custom steps have no batched form)."""

    def __init__(self, *, random_flip: bool = True, translate: float = 0.0, scale: float = 0.0,
                 color_jitter: float = 0.0, robust_augment: float = 0.0):
        self.random_flip, self.translate, self.scale = random_flip, translate, scale
        self.color_jitter, self.robust_augment = color_jitter, robust_augment
        self.robust = None
        if robust_augment > 0:
            from torchvision.transforms import v2

            from .augment import robust_augmentations

            self.robust = v2.Compose(robust_augmentations(robust_augment))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, dev = len(images), images.device
        if self.random_flip:
            images = flip(images, torch.rand(n, device=dev) < 0.5)
        if self.translate > 0 or self.scale > 0:
            h, w = images.shape[-2:]
            # RandomAffine: t ~ U(-t_max, t_max) rounded half-to-even to whole pixels, s ~ U(1 - s, 1 + s)
            tx = (torch.rand(n, device=dev) * 2 - 1).mul_(self.translate * w).round_()
            ty = (torch.rand(n, device=dev) * 2 - 1).mul_(self.translate * h).round_()
            s = 1 + (torch.rand(n, device=dev) * 2 - 1) * self.scale if self.scale > 0 else torch.ones(n, device=dev)
            images = affine(images, tx, ty, s)
        if self.color_jitter > 0:
            j = self.color_jitter
            low, high = max(0.0, 1 - j), 1 + j
            factors = torch.rand(3, n, device=dev) * (high - low) + low
            order = torch.rand(n, 3, device=dev).argsort(dim=1)  # a uniform random permutation per image
            images = color_jitter(images, factors[0], factors[1], factors[2], order)
        if self.robust is not None:
            images = torch.stack([self.robust(img) for img in images.cpu()]).to(dev)
        return images


class InMemoryImages(torch.utils.data.Dataset):
    """Decoded images and labels; ``__getitems__`` serves a whole batch with one index (torch's DataLoader
    calls it instead of ``__getitem__`` per row), augmented as one batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment | None = None):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> dict:
        idx = torch.as_tensor(indices, device=self.images.device)
        images = self.images[idx]
        if self.augment is not None:
            images = self.augment(images)
        return {"pixel_values": images, "labels": self.labels[idx]}

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        return {"pixel_values": batch["pixel_values"][0], "labels": batch["labels"][0]}


def keep_batch(batch: dict) -> dict:
    """collate_fn: ``__getitems__`` already returns the batch (module level, so that workers can pickle it)."""
    return batch


def in_memory_loaders(splits: dict, resolution: int, train_batch_size: int, eval_batch_size: int,
                      num_workers: int = 0, device: torch.device | str = "cpu", **augment) -> dict:
    """The in-memory counterpart of kface.train.setup.image_loaders: same splits, batch sizes, shuffling and
    augmentation flags. The images live on ``device`` when ``num_workers`` is 0; worker processes cannot
    share device tensors, so with workers they stay on the CPU and the batches are augmented there."""
    place = torch.device(device) if num_workers == 0 else torch.device("cpu")
    loaders = {}
    for name, ds in splits.items():
        if ds is None:
            continue
        train = name == "train"
        images, labels = decode_split(ds, resolution)
        logger.info("%s: %d images decoded into memory (%.1f MB on %s)", name, len(labels), images.numel() / 1e6,
                    place)
        data = InMemoryImages(images.to(place), labels.to(place), BatchAugment(**augment) if train else None)
        loaders[name] = torch.utils.data.DataLoader(data, batch_size=train_batch_size if train else eval_batch_size,
                                                    shuffle=train, num_workers=num_workers, collate_fn=keep_batch,
                                                    drop_last=False)
    return loaders
