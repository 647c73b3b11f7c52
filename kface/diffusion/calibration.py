"""Is a DDPM calibrated? Its eps at the highest noise level, and the colour of its samples.

At t = T - 1 the noisy image is almost pure noise (alpha_bar_999 = 4e-5 on the linear schedule), so the best
eps prediction is close to x_t itself: E[eps | x_t] ~ sqrt(1 - alpha_bar) x_t. A network that cannot see the
per-channel mean of its input (GroupNorm with one channel per group, issue 12) predicts an eps whose
channel means do not follow x_T's; the x_0 = (x_t - sqrt(1 - alpha_bar) eps) / sqrt(alpha_bar) derived from
it is then off by the error times ~150, and clipping x_0 decides the colours of the sample.

``epsilon_calibration`` reports, at t = T - 1:
- ``mean_slope``: least-squares slope of eps's per-channel spatial means on x_T's (ideal ~1);
- ``norm_ratio``: mean over images of ||eps|| / ||x_T|| (ideal ~1);
- ``scale_response``: d log||eps|| / d log s when x_T is scaled by s (ideal 1: eps grows with x_T).

``colour_stats`` sets the colours of samples against real crops (mean, std, chroma, saturated share).
"""

import math

import numpy as np
import torch


def _epsilon(unet, noise_scheduler, x: torch.Tensor, t: int, labels) -> torch.Tensor:
    """The network's eps at timestep t (converted from v for v-prediction models), in fp32."""
    out = unet(x, torch.full((x.shape[0],), t, device=x.device), class_labels=labels).sample.float()
    if noise_scheduler.config.prediction_type == "v_prediction":
        # eps = sqrt(alpha_bar) v + sqrt(1 - alpha_bar) x_t (Salimans & Ho 2022, from v's definition)
        abar = float(noise_scheduler.alphas_cumprod[t])
        return math.sqrt(abar) * out + math.sqrt(1 - abar) * x.float()
    return out


def _null_labels(unet, n: int, device):
    embeds = getattr(unet.config, "num_class_embeds", None)
    return torch.full((n,), embeds - 1, dtype=torch.long, device=device) if embeds else None


@torch.no_grad()
def epsilon_calibration(unet, noise_scheduler, num_images: int = 32, shift_std: float = 0.1, scale: float = 1.03,
                        class_labels: torch.Tensor | None = None, seed: int = 0) -> dict:
    """Slope of eps's channel means on x_T's, the ratio of norms and the response to scaling, at t = T - 1.

    x_T is standard noise plus a per-(image, channel) constant shift ~ N(0, ``shift_std``^2), so that the
    channel means spread well beyond the noise's own 1/sqrt(H W). ``class_labels`` default to the null class
    of a class-conditional UNet (the unconditional model).
    """
    config, param = unet.config, next(unet.parameters())
    t = noise_scheduler.config.num_train_timesteps - 1
    gen = torch.Generator().manual_seed(seed)
    shape = (num_images, config.in_channels, config.sample_size, config.sample_size)
    x = torch.randn(shape, generator=gen) + shift_std * torch.randn(shape[:2] + (1, 1), generator=gen)
    x = x.to(param.device)
    labels = class_labels if class_labels is not None else _null_labels(unet, num_images, param.device)
    eps = _epsilon(unet, noise_scheduler, x.to(param.dtype), t, labels)
    eps_scaled = _epsilon(unet, noise_scheduler, (scale * x).to(param.dtype), t, labels)
    x_means, eps_means = x.mean((2, 3)).flatten().double(), eps.mean((2, 3)).flatten().double()
    dx = x_means - x_means.mean()
    slope = float((dx * (eps_means - eps_means.mean())).sum() / (dx * dx).sum())
    norm = lambda v: v.flatten(1).double().norm(dim=1)  # noqa: E731
    abar = float(noise_scheduler.alphas_cumprod[t])
    return {"timestep": t, "ideal": round(math.sqrt(1 - abar), 6), "mean_slope": slope,
            "norm_ratio": float((norm(eps) / norm(x)).mean()),
            "scale_response": float((norm(eps_scaled) / norm(eps)).log().mean() / math.log(scale)),
            "num_images": num_images}


@torch.no_grad()
def mean_response(unet, timestep: int, shift: float = 0.5, num_images: int = 4, seed: int = 0) -> torch.Tensor:
    """C x C matrix: change of the output's per-channel means per unit shift of one input channel's mean.

    A property of the architecture as much as of the weights: where a GroupNorm normalises each channel on its
    own, the shift is removed before it reaches the output, and the matrix is ~0 even at random init.
    """
    config, param = unet.config, next(unet.parameters())
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(num_images, config.in_channels, config.sample_size, config.sample_size, generator=gen)
    x = x.to(param.device, param.dtype)
    t = torch.full((num_images,), timestep, device=param.device)
    labels = _null_labels(unet, num_images, param.device)
    base = unet(x, t, class_labels=labels).sample.float().mean((0, 2, 3))
    rows = []
    for c in range(config.in_channels):
        shifted = x.clone()
        shifted[:, c] += shift
        rows.append((unet(shifted, t, class_labels=labels).sample.float().mean((0, 2, 3)) - base) / shift)
    return torch.stack(rows, 1)  # [output channel, input channel]


def colour_stats(images: np.ndarray) -> dict:
    """Colour of uint8 images (NCHW or NHWC with 3 channels), to set samples against real crops.

    ``channel_mean`` / ``channel_std``: per RGB channel over all pixels, in [0, 1]; ``chroma``: mean over pixels
    of max(R, G, B) - min(R, G, B) (HSV chroma; grey = 0); ``saturated``: share of channel values at 0 or 255
    (issue 12: 12% for broken DPM-Solver++ samples, 0.6% for real crops).
    """
    x = np.asarray(images)
    if x.shape[-1] == 3 and x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"colour_stats needs uint8 RGB images, got {x.dtype} of shape {x.shape}")
    f = x.astype(np.float64) / 255.0
    return {"channel_mean": [round(float(v), 4) for v in f.mean((0, 2, 3))],
            "channel_std": [round(float(v), 4) for v in f.std((0, 2, 3))],
            "chroma": round(float((f.max(1) - f.min(1)).mean()), 4),
            "saturated": round(float(((x == 0) | (x == 255)).mean()), 4)}
