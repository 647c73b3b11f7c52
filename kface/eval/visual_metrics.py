"""Visual metrics: FID and KID (clean-fid's Inception features), Inception Score, per-class LPIPS diversity.

Their networks come from the internet (clean-fid's Inception torchscript, the FID Inception state dict,
torchvision's AlexNet/VGG for LPIPS). Availability is checked first and cheaply (a file in the place the
library looks, or a path the user gave); offline (``HF_HUB_OFFLINE=1``) nothing is downloaded, and a
metric whose weights are missing is reported as ``{"skipped": "<why; how to provide the weights>"}``
instead of a number. Online, a missing file is downloaded once with a socket timeout, never retried.
"""

import hashlib
import logging
import os
import socket
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..utils.errors import InputError
from ..utils.hub import hub_offline
from .features import Extractor, extract, frechet_distance_features
from .fidelity import fidelity_metrics

logger = logging.getLogger(__name__)

INCEPTION_FILE = "inception-2015-12-05.pt"  # clean-fid's torchscript (StyleGAN2-ADA's TF Inception port)
FID_MODES = ("clean", "legacy_pytorch", "legacy_tensorflow")
DOWNLOAD_TIMEOUT_S = 30


class Unavailable(Exception):
    """A metric's weights cannot be had; the message says why and how to provide them."""


def offline() -> bool:
    # KFACE_OFFLINE stops these downloads (NVIDIA's CDN, torchvision's) and leaves the Hub alone
    return hub_offline() or os.environ.get("KFACE_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


@contextmanager
def _socket_timeout(seconds: float):
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _cached_or_download(candidates: list[Path], url: str, target: Path, what: str, how: str) -> Path:
    for path in candidates:
        if path.is_file():
            return path
    looked = ", ".join(str(p) for p in candidates)
    if offline():
        raise Unavailable(f"{what} not found (looked in {looked}) and HF_HUB_OFFLINE is set; {how}")
    try:
        from torch.hub import download_url_to_file

        target.parent.mkdir(parents=True, exist_ok=True)
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            download_url_to_file(url, str(target), progress=False)
    except Exception as err:  # no network, proxy, disk: the run goes on without this metric
        raise Unavailable(f"{what} not found (looked in {looked}) and downloading {url} failed "
                          f"({type(err).__name__}); {how}") from None
    return target


INCEPTION_ENV = "KFACE_INCEPTION_WEIGHTS"  # an explicit path, as the inception_weights parameter
INCEPTION_SHA256_ENV = "KFACE_INCEPTION_SHA256"  # the expected digest of the weights file
# No SHA-256 of inception-2015-12-05.pt is published (not by NVIDIA, whose CDN serves it, nor by clean-fid,
# which downloads it without a check; searched 2026-12). So the expected digest is, in this order:
# KFACE_INCEPTION_SHA256, or the "<file>.sha256" record kface writes when it downloads the file itself (over
# HTTPS, from the URL clean-fid uses); a file without either is loaded with a warning and its digest reported.
SHA256_SUFFIX = ".sha256"


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _expected_sha256(path: Path) -> str | None:
    if os.environ.get(INCEPTION_SHA256_ENV, "").strip():
        return os.environ[INCEPTION_SHA256_ENV].strip().lower()
    record = path.with_name(path.name + SHA256_SUFFIX)
    return record.read_text().split()[0].lower() if record.is_file() else None


def inception_file(weights: str | None) -> tuple[Path, str]:
    """clean-fid's Inception torchscript and its SHA-256, checked: ``weights`` (a file), else
    $KFACE_INCEPTION_WEIGHTS, else the user's torch hub cache (``$TORCH_HOME/hub/checkpoints``).

    Never /tmp, where clean-fid caches it: any user can put a file there, and ``torch.jit.load`` runs its
    code. A digest that differs from the expected one (see ``INCEPTION_SHA256_ENV``) is :class:`Unavailable`.
    """
    weights = weights or os.environ.get(INCEPTION_ENV, "").strip() or None
    if weights:
        if not Path(weights).is_file():
            raise Unavailable(f"inception_weights {weights}: no such file")
        path = Path(weights)
    else:
        from cleanfid.downloads_helper import inception_url

        target = Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE
        fetched = not target.is_file()
        path = _cached_or_download([target], inception_url, target, "clean-fid's Inception weights",
                                   f"download {inception_url} and give its path as inception_weights")
        record = target.with_name(target.name + SHA256_SUFFIX)
        if fetched and not record.is_file():
            record.write_text(f"{file_sha256(target)}  {INCEPTION_FILE}\n")  # trust on first download
    digest, expected = file_sha256(path), _expected_sha256(path)
    if expected is None:
        logger.warning("%s: no expected SHA-256 to check it against (none is published); its SHA-256 is %s. Set "
                       "%s to pin it", path, digest, INCEPTION_SHA256_ENV)
    elif digest != expected:
        raise Unavailable(f"Inception weights {path}: SHA-256 {digest[:16]}... differs from the expected "
                          f"{expected[:16]}... ({INCEPTION_SHA256_ENV} or {path.name}{SHA256_SUFFIX}); the file is "
                          "damaged or not clean-fid's: delete it and download it again")
    return path, digest


class InceptionDetector(torch.nn.Module):
    """clean-fid's feature extractor for one ``mode`` behind the kface protocol (uint8 NCHW -> float NC).

    ``probs`` gives the 1008-way softmax of the same torchscript network, for the Inception Score.
    """

    def __init__(self, mode: str, *, weights: str | None = None, device="cpu"):
        super().__init__()
        from cleanfid.resize import build_resizer

        if mode not in FID_MODES:
            raise InputError(f"mode {mode!r}: one of {FID_MODES}")
        self.mode, self.device = mode, torch.device(device)
        path, self.sha256 = inception_file(weights)
        try:
            self.base = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as err:  # a truncated or foreign file: the identity metrics are already computed
            raise Unavailable(f"Inception weights {path} cannot be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120] if str(err) else ''}); the file is damaged: delete it "
                              "and download it again") from None
        self.resize = build_resizer(mode)
        self.pytorch_net = self._pytorch_inception() if mode == "legacy_pytorch" else None

    def _pytorch_inception(self):
        from cleanfid.inception_pytorch import FID_WEIGHTS_URL, InceptionV3

        name = Path(FID_WEIGHTS_URL).name
        cached = Path(torch.hub.get_dir()) / "checkpoints" / name
        _cached_or_download([cached], FID_WEIGHTS_URL, cached, "pytorch-fid's Inception weights",
                            f"download {FID_WEIGHTS_URL} into {cached.parent}, or use the fid mode 'clean'")
        return InceptionV3(output_blocks=[3], resize_input=False).to(self.device).eval()

    def _resized(self, images: torch.Tensor) -> torch.Tensor:
        """Float [0, 255] NCHW, resized the way clean-fid resizes for this mode (per image, on the CPU)."""
        arrays = [self.resize(img) for img in images.permute(0, 2, 3, 1).cpu().numpy()]
        return torch.from_numpy(np.stack(arrays).astype(np.float32)).permute(0, 3, 1, 2).to(self.device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self._resized(images)
        if self.mode == "legacy_pytorch":
            return self.pytorch_net(x / 255)[0].flatten(1)
        if self.mode == "legacy_tensorflow":
            return self.base(x, return_features=True).view(len(x), 2048)
        return self.base.layers.forward((x - 128) / 128).view(len(x), 2048)

    @torch.no_grad()
    def probs(self, images: torch.Tensor) -> torch.Tensor:
        # no_output_bias as in StyleGAN2-ADA's IS, which matches the original TF implementation
        out = self.base(self._resized(images), no_output_bias=True).float()
        rows = out.sum(dim=1)
        return out if torch.allclose(rows, torch.ones_like(rows), atol=1e-3) else out.softmax(dim=1)


IS_SPLITS = 10  # the usual 10 splits (Salimans et al. 2016)
IS_MIN_PER_SPLIT = 10  # a split's p(y) is the mean of its predictions; one image alone scores exactly 1.0


def inception_score_splits(num_images: int, *, splits: int = IS_SPLITS, min_per_split: int = IS_MIN_PER_SPLIT
                           ) -> int:
    """How many splits ``num_images`` allow: up to ``splits``, each of at least ``min_per_split`` (0: none)."""
    return min(splits, num_images // min_per_split)


def inception_score(probs: np.ndarray, *, splits: int = IS_SPLITS, min_per_split: int = IS_MIN_PER_SPLIT
                    ) -> tuple[float, float]:
    """IS = exp(E_x KL(p(y|x) || p(y))) (Salimans et al. 2016), mean and std over ``splits`` chunks.

    :class:`InputError` when a chunk would hold fewer than ``min_per_split`` images (see
    ``inception_score_splits``).
    """
    probs = np.asarray(probs, dtype=np.float64)
    if splits < 1 or len(probs) < splits * min_per_split:
        raise InputError(f"probs: the Inception Score of {len(probs)} image(s) in {splits} split(s) needs at least "
                         f"{min_per_split} per split ({max(splits, 1) * min_per_split} images)")
    scores = []
    for chunk in np.array_split(probs, splits):
        marginal = chunk.mean(axis=0, keepdims=True)
        kl = np.where(chunk > 0, chunk * (np.log(np.clip(chunk, 1e-30, None)) - np.log(np.clip(marginal, 1e-30, None))),
                      0.0).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, seed: int = 0,
                              num_subsets: int = 100, max_subset_size: int = 1000) -> float:
    """clean-fid's KID (unbiased MMD^2, cubic polynomial kernel, subset average), seeded.

    clean-fid draws subsets from NumPy's global generator; its state is saved and restored around the call.
    """
    from cleanfid.fid import kernel_distance

    state = np.random.get_state()
    np.random.seed(seed)
    try:
        return float(kernel_distance(np.asarray(features1), np.asarray(features2), num_subsets=num_subsets,
                                     max_subset_size=max_subset_size))
    finally:
        np.random.set_state(state)


def load_lpips(net: str = "alex", *, backbone: str | None = None, device="cpu", random_backbone: bool = False):
    """``lpips.LPIPS`` with its linear layers from the lpips package and the backbone from torchvision's cache,
    ``backbone`` (a torchvision alexnet/vgg16 state dict file), or random (tests only)."""
    import lpips
    import torchvision

    tv_weights = {"alex": torchvision.models.AlexNet_Weights.IMAGENET1K_V1,
                  "vgg": torchvision.models.VGG16_Weights.IMAGENET1K_V1}[net]
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(tv_weights.url).name
    if not random_backbone:
        if backbone and not Path(backbone).is_file():
            raise Unavailable(f"backbone {backbone}: no such file")
        backbone = backbone or str(_cached_or_download(
            [cached], tv_weights.url, cached, f"torchvision's {net} weights for LPIPS",
            f"download {tv_weights.url} into {cached.parent} or give a backbone file"))
    with warnings.catch_warnings():  # lpips still passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        try:
            model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
        except Exception as err:  # the lpips package's own linear-layer weights are damaged
            raise Unavailable(f"the lpips package's {net} weights cannot be loaded ({type(err).__name__}); "
                              "reinstall lpips (pip install --force-reinstall lpips)") from None
    if backbone:
        _load_backbone(model, net, backbone)
    return model.to(device).eval()


def _load_backbone(model, net: str, path: str) -> None:
    """Copy a torchvision alexnet/vgg16 state dict's ``features.*`` (all LPIPS uses) into lpips' slices,
    which hold torchvision's ``features[i]`` modules under their original index ``i``."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file
        raise Unavailable(f"backbone {path} cannot be loaded ({type(err).__name__}); the file is damaged: delete it "
                          f"and download it again, or give a torchvision {net} state dict") from None
    if not isinstance(state, dict):
        raise Unavailable(f"backbone {path}: not a state dict; give a torchvision {net} state dict")
    for slice_ in (m for n, m in model.net.named_children() if n.startswith("slice")):
        for index, module in slice_.named_children():
            for name, param in module.named_parameters():
                key = f"features.{index}.{name}"
                if key not in state:
                    raise Unavailable(f"backbone {path}: no {key}; give a torchvision {net} state dict")
                param.data.copy_(state[key])


@torch.no_grad()
def lpips_diversity(model, images: np.ndarray, labels: np.ndarray, class_names: list[str], *, pairs: int = 1000,
                    seed: int = 0, batch_size: int = 250, device="cpu", class_ids: list[int] | None = None) -> dict:
    """Mean LPIPS distance of ``pairs`` random pairs of distinct images per class (the paper's Table 3).

    ``class_ids[i]`` is the label of ``class_names[i]`` (default: ``i``)."""
    rng = np.random.default_rng(seed)
    per_class = {}
    for c, name in zip(class_ids or range(len(class_names)), class_names):
        idx = np.flatnonzero(labels == c)
        if len(idx) < 2:
            per_class[name] = None
            continue
        a = rng.integers(0, len(idx), pairs)
        b = (a + rng.integers(1, len(idx), pairs)) % len(idx)  # uniform over the other images: never a == b
        dists = []
        for s in range(0, pairs, batch_size):
            x0 = torch.from_numpy(images[idx[a[s:s + batch_size]]]).to(device).float() / 127.5 - 1
            x1 = torch.from_numpy(images[idx[b[s:s + batch_size]]]).to(device).float() / 127.5 - 1
            dists.append(model(x0, x1).flatten().cpu().numpy())
        per_class[name] = float(np.concatenate(dists).mean())
    values = [v for v in per_class.values() if v is not None]
    return {"per_class": per_class, "mean": float(np.mean(values)) if values else None, "pairs_per_class": pairs}


def _inception_score(det, images: np.ndarray, batch_size: int, device) -> dict:
    """IS over as many splits (up to 10) as allow IS_MIN_PER_SPLIT images each; the splits used are reported."""
    probs_fn = getattr(det, "probs", None)
    if probs_fn is None:
        return {"skipped": "the feature extractor has no class probabilities"}
    splits = inception_score_splits(len(images))
    if splits == 0:
        return _skip(ValueError(f"{len(images)} generated image(s); the Inception Score needs at least "
                                f"{IS_MIN_PER_SPLIT} (one split of {IS_MIN_PER_SPLIT})"))
    mean, std = inception_score(extract(probs_fn, images, batch_size=batch_size, device=device), splits=splits)
    return {"mean": mean, "std": std, "splits": splits, "min_per_split": IS_MIN_PER_SPLIT}


def _skip(err: Exception) -> dict:
    logger.warning("skipped: %s", err)
    return {"skipped": str(err)}


def visual_metrics(gen, real_train, *, fid_mode: str = "clean", inception_weights: str | None = None,
                   lpips_net: str = "alex", lpips_backbone: str | None = None, lpips_pairs: int = 1000,
                   seed: int = 0, batch_size: int = 64, device="cpu", detector: Extractor | None = None,
                   lpips_model=None, fidelity: dict | None = None) -> dict:
    """FID, KID and IS of ``gen`` (an ImageSet) against ``real_train`` (an ImageSet, or a function returning
    one), and LPIPS diversity; a metric whose
    weights are unavailable becomes ``{"skipped": ...}``. ``detector``/``lpips_model`` override the networks.

    ``fidelity`` (``real_test``: an ImageSet, ``class_names``: the names ``labels`` index, ``k``,
    ``num_resamples``): precision, recall, density and coverage in the Inception features as well
    (kface.eval.fidelity.fidelity_metrics: train split the reference, test split the ceiling)."""
    out = {"fid_mode": fid_mode}
    try:
        det = detector or InceptionDetector(fid_mode, weights=inception_weights, device=device)
        if getattr(det, "sha256", None):
            out["inception_sha256"] = det.sha256
        f_gen = extract(det, gen.images, batch_size=batch_size, device=device)
        real = real_train() if callable(real_train) else real_train  # read only when the network is there
        f_real = extract(det, real.images, batch_size=batch_size, device=device)
        if min(len(f_gen), len(f_real)) < 2:  # a covariance (FID) and KID's unbiased MMD need 2 per side
            out["fid"] = out["kid"] = _skip(ValueError(
                f"{len(f_gen)} generated and {len(f_real)} real train image(s); FID and KID need at least 2 each"))
        else:
            out["fid"] = frechet_distance_features(f_real, f_gen)
            out["kid"] = kernel_inception_distance(f_real, f_gen, seed=seed)
        out["inception_score"] = _inception_score(det, gen.images, batch_size, device)
        if fidelity is not None:
            test = fidelity["real_test"]
            f_test = extract(det, test.images, batch_size=batch_size, device=device)
            out["fidelity"] = fidelity_metrics(f_real, real.labels, f_gen, gen.labels, f_test, test.labels,
                                               fidelity["class_names"], k=fidelity["k"],
                                               num_resamples=fidelity["num_resamples"], seed=seed, space="inception")
    except Unavailable as err:
        out["fid"] = out["kid"] = out["inception_score"] = _skip(err)
        if fidelity is not None:
            out["fidelity"] = _skip(err)
    try:
        model = lpips_model or load_lpips(lpips_net, backbone=lpips_backbone, device=device)
        out["lpips"] = lpips_diversity(model, gen.images, gen.labels, gen.class_names, pairs=lpips_pairs,
                                       seed=seed, device=device, class_ids=gen.class_ids)
        out["lpips"]["net"] = lpips_net
    except Unavailable as err:
        out["lpips"] = _skip(err)
    return out
