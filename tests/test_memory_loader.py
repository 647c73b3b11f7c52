"""kface.data.memory (--in_memory): the same pixels as the per-image path, torchvision's augmentations in batched
form, the same batches per rank and per epoch under accelerate, and both trainers running with the flag."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from torchvision.transforms.v2 import functional as F

from kface.data.memory import BatchAugment, InMemoryImages, affine, color_jitter, flip, in_memory_loaders, keep_batch
from kface.train.setup import image_loaders

pytestmark = pytest.mark.one_thread


def numbered(n: int, size: int = 8) -> InMemoryImages:
    """n random images whose label is their index, so that a batch says which rows it holds."""
    g = torch.Generator().manual_seed(1)
    return InMemoryImages(torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), torch.arange(n))


@pytest.mark.parametrize("resolution", [32, 16])  # 16: the resize from the stored 32 px happens at decoding
def test_decoded_pixels_equal_the_per_image_path(tiny_dataset, resolution):
    from datasets import load_from_disk

    ds = load_from_disk(str(tiny_dataset))
    splits = {"train": ds["train"], "test": ds["test"]}
    kwargs = dict(resolution=resolution, train_batch_size=8, eval_batch_size=10, random_flip=False)
    ours, theirs = in_memory_loaders(splits, **kwargs), image_loaders(splits, **kwargs)
    assert len(ours["test"]) == len(theirs["test"]) == math.ceil(32 / 10)
    for a, b in zip(ours["test"], theirs["test"]):
        assert a["pixel_values"].dtype == torch.uint8 and a["pixel_values"].shape[-1] == resolution
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
    # the training loaders shuffle with the same sampler: the same order for the same seed, the same pixels
    torch.manual_seed(4)
    train_ours = list(ours["train"])
    torch.manual_seed(4)
    train_theirs = list(theirs["train"])
    assert len(train_ours) == len(train_theirs) == 64 // 8
    for a, b in zip(train_ours, train_theirs):
        assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])


def test_flips_are_exact_mirrors_with_probability_half_and_repeat_for_a_seed():
    data = numbered(4000)
    torch.manual_seed(0)
    out = BatchAugment(random_flip=True)(data.images)
    same = (out == data.images).flatten(1).all(1)
    mirrored = (out == data.images.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())  # random 8 px images: never their own mirror, so exactly one holds
    # binomial(4000, 0.5): sd 0.0079; 4 sd either side
    assert abs(mirrored.float().mean().item() - 0.5) < 4 * math.sqrt(0.25 / 4000)
    torch.manual_seed(0)
    assert torch.equal(BatchAugment(random_flip=True)(data.images), out)
    assert torch.equal(flip(data.images[:3], torch.tensor([True, False, True]))[0], F.horizontal_flip(data.images[0]))


def test_batched_affine_equals_torchvision_per_image():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(0, 256, (48, 3, 32, 32), dtype=torch.uint8, generator=g)
    tx, ty = torch.randint(-3, 4, (2, 48), generator=g).float()
    s = 0.9 + 0.2 * torch.rand(48, generator=g)
    ref = torch.stack([F.affine(x[i], angle=0.0, translate=[int(tx[i]), int(ty[i])], scale=float(s[i]),
                                shear=[0.0, 0.0], fill=0) for i in range(48)])
    assert torch.equal(affine(x, tx, ty, s), ref)


def test_batched_color_jitter_equals_torchvision_per_image():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (48, 3, 16, 16), dtype=torch.uint8, generator=g)
    factors = 0.8 + 0.4 * torch.rand(3, 48, generator=g)
    order = torch.rand(48, 3, generator=g).argsort(1)
    steps = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation]
    ref = []
    for i in range(48):
        img = x[i]
        for k in order[i].tolist():
            img = steps[k](img, float(factors[k, i]))
        ref.append(img)
    diff = (color_jitter(x, *factors, order).int() - torch.stack(ref).int()).abs()
    # float rounding of the blend (fused multiply-add in torchvision's add_(alpha=...)) can move a value
    # sitting on an integer boundary by one grey level
    assert diff.max().item() <= 1 and (diff > 0).float().mean().item() < 1e-3


def test_full_augmentation_keeps_shape_dtype_and_device_and_repeats_for_a_seed():
    x = numbered(64, size=16).images
    augment = BatchAugment(random_flip=True, translate=0.1, scale=0.1, color_jitter=0.2, robust_augment=0.3)
    torch.manual_seed(5)
    out = augment(x)
    assert out.shape == x.shape and out.dtype == torch.uint8 and not torch.equal(out, x)
    torch.manual_seed(5)
    assert torch.equal(augment(x), out)


def test_accelerate_shards_and_resumes_the_in_memory_loader(tmp_path):
    """Each of 2 ranks gets its own batches, as many as the trainers' step arithmetic expects, and a
    mid-epoch resume (skip_first_batches) sees the rest of the same epoch."""
    from accelerate.data_loader import prepare_data_loader

    from kface.train.setup import build_accelerator

    data = numbered(50)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, collate_fn=keep_batch)
    assert len(loader) == 7
    seen = []
    for rank in range(2):
        shard = prepare_data_loader(loader, num_processes=2, process_index=rank, put_on_device=False,
                                    use_seedable_sampler=True, data_seed=0)
        shard.set_epoch(1)
        batches = [b["labels"].tolist() for b in shard]
        assert len(shard) == len(batches) == -(-len(loader) // 2)  # train_ddpm.make_loader's arithmetic
        seen.append([i for b in batches for i in b])
    assert set(seen[0]) | set(seen[1]) == set(range(50))  # 7 batches: rank 1 pads its last one from the start
    assert not set(seen[0]) & set(seen[1][:20])

    accelerator = build_accelerator(tmp_path, seed=3, report_to="none")
    prepared = accelerator.prepare(loader)
    prepared.set_epoch(2)
    epoch2 = [b["labels"].tolist() for b in prepared]
    prepared.set_epoch(2)
    assert [b["labels"].tolist() for b in accelerator.skip_first_batches(prepared, 3)] == epoch2[3:]


def test_train_ddpm_in_memory_trains_the_same_weights_as_the_per_image_path(tiny_dataset, tmp_path):
    """Augmentation off: the same pixels in the same order, so 3 steps give identical weights."""
    import train_ddpm

    config = tmp_path / "unet.json"
    config.write_text(json.dumps({"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
                                  "down_block_types": ["DownBlock2D", "DownBlock2D"],
                                  "up_block_types": ["UpBlock2D", "UpBlock2D"]}))
    weights = {}
    for mode in ("in_memory", "per_image"):
        out = tmp_path / mode
        argv = ["--dataset", str(tiny_dataset), "--output_dir", str(out), "--model_config", str(config),
                "--preset", "tiny", "--resolution", "16", "--train_batch_size", "8", "--epochs", "1",
                "--max_train_steps", "3",
                "--no-random_flip", "--no-use_ema", "--report_to", "none", "--validation_steps", "0",
                "--validation_images_per_class", "1", "--validation_inference_steps", "1", "--mixed_precision", "no"]
        train_ddpm.main(train_ddpm.parse_args(argv + (["--in_memory"] if mode == "in_memory" else [])))
        summary = json.loads((out / "training_config.json").read_text())
        assert summary["trained_steps"] == 3 and summary["planned_steps"] == summary["steps_per_epoch"] == 64 // 8
        weights[mode] = load_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    assert weights["in_memory"].keys() == weights["per_image"].keys()
    for name, value in weights["in_memory"].items():
        assert torch.equal(value, weights["per_image"][name]), name


def test_train_oracle_in_memory_with_every_augmentation(tiny_dataset, tmp_path):
    import train_oracle

    out = tmp_path / "oracle"
    train_oracle.main(train_oracle.parse_args([
        "--dataset", str(tiny_dataset), "--output_dir", str(out), "--model", "resnet18", "--resolution", "16",
        "--in_memory", "--robust_augment", "--warmup_epochs", "0", "--epochs", "1", "--train_batch_size", "16",
        "--max_train_steps", "2", "--report_to", "none", "--mixed_precision", "no"]))
    summary = json.loads((out / "train_summary.json").read_text())
    # 64 train images, 6 held out for validation: 58 -> 4 batches of 16 per epoch
    assert summary["steps"] == 2 and summary["steps_per_epoch"] == 4 and summary["args"]["in_memory"] is True
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_samples"] == 32 and sum(map(sum, metrics["confusion_matrix"])) == 32
