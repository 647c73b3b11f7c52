"""Fast diffusers samplers that clip x_0 the way DDIM does: clip the x_0 prediction, keep the model's eps.

DDIM with ``clip_sample=True`` (and its default ``use_clipped_model_output=False``) steps to
x_t = alpha_t clip(x_0) + sigma_t eps_model. diffusers' multistep solvers offer only ``thresholding``, which
clips x_0 and then uses the eps implied by it, (x_s - alpha_s clip(x_0)) / sigma_s: whatever the clip removed
stays in the state until the last step. At order 1 that is DDIM with ``use_clipped_model_output=True``, and on
a model whose eps is wrong at high noise it breaks samples (issue 12: 12% of channel values at 0 or 255). No
diffusers option does DDIM's kind of clipping for these solvers, so it is written here, as a projection of
the state before each step: x_s <- alpha_s clip(x_0) + sigma_s eps. The solver then sees a state whose x_0
is the clipped one and whose eps is the model's; at order 1 this is exactly kface's DDIM. UniPC's corrector
rebuilds x_s from the previous state, so its output is projected too.

Each class is the diffusers scheduler with a ``step`` that projects first; the config is the parent's.

The registry of kface's samplers (``SCHEDULERS``, their aliases, ``make_scheduler``) lives here too: the one
place that knows a sampler's name.
"""

import inspect

import torch
from diffusers import (DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
                       UniPCMultistepScheduler)

from ..utils.errors import InputError

CLIP_RANGE = 1.0  # kface's data range is [-1, 1]


def project_to_clipped_x0(model_output: torch.Tensor, sample: torch.Tensor, alpha: float, sigma: float,
                          prediction_type: str, frame_scale: float = 1.0):
    """(sample', model_output', eps): x_0 of (sample', model_output') is clip(x_0), and its eps the model's.

    ``sample`` = frame_scale * x_t with x_t = alpha x_0 + sigma eps; Euler's sample is x_t / alpha
    (frame_scale = 1 / alpha), the others' frame_scale is 1.
    """
    x, out = sample / frame_scale, model_output.to(sample.dtype)
    if prediction_type == "epsilon":
        eps = out
    elif prediction_type == "v_prediction":  # v = alpha eps - sigma x_0 (Salimans & Ho 2022)
        eps = sigma * x + alpha * out
    else:
        raise ValueError(f"prediction_type {prediction_type!r}: clipping x_0 needs epsilon or v_prediction")
    x_new = clip_x0_keep_eps(x, eps, alpha, sigma)
    x0 = (x_new - sigma * eps) / alpha
    new_out = eps if prediction_type == "epsilon" else alpha * eps - sigma * x0
    return frame_scale * x_new, new_out.to(model_output.dtype), eps


def clip_x0_keep_eps(x: torch.Tensor, eps: torch.Tensor, alpha: float, sigma: float) -> torch.Tensor:
    """alpha clip(x_0) + sigma eps with x_0 = (x - sigma eps) / alpha (DDPM eq. 4 solved for x_0)."""
    x0 = ((x - sigma * eps) / alpha).clamp(-CLIP_RANGE, CLIP_RANGE)
    return alpha * x0 + sigma * eps


class _ClipX0LikeDDIM:
    """Mixin: project the state before the parent's step (see the module docstring)."""

    def _alpha_sigma_scale(self, timestep) -> tuple[float, float, float]:
        abar = float(self.alphas_cumprod[int(round(float(timestep)))])
        return abar ** 0.5, (1 - abar) ** 0.5, 1.0

    def step(self, model_output, timestep, sample, *args, generator=None, **kwargs):
        alpha, sigma, scale = self._kface_frame = self._alpha_sigma_scale(timestep)
        sample, model_output, self._kface_eps = project_to_clipped_x0(
            model_output, sample, alpha, sigma, self.config.prediction_type, scale)
        # the pipeline passes its per-image generators by name to a step that takes them; the stochastic
        # solvers draw their noise from them (without, SDE-DPM-Solver++ would use the global RNG)
        if "generator" in inspect.signature(super().step).parameters:
            kwargs["generator"] = generator
        return super().step(model_output, timestep, sample, *args, **kwargs)


class ClippedDPMSolverMultistepScheduler(_ClipX0LikeDDIM, DPMSolverMultistepScheduler):
    pass


class ClippedUniPCMultistepScheduler(_ClipX0LikeDDIM, UniPCMultistepScheduler):
    def multistep_uni_c_bh_update(self, *args, **kwargs):
        # the corrector rebuilds x_s from last_sample and the model outputs: project its result as well
        corrected = super().multistep_uni_c_bh_update(*args, **kwargs)
        alpha, sigma, _ = self._kface_frame
        return clip_x0_keep_eps(corrected, self._kface_eps, alpha, sigma)


class ClippedEulerDiscreteScheduler(_ClipX0LikeDDIM, EulerDiscreteScheduler):
    def _alpha_sigma_scale(self, timestep) -> tuple[float, float, float]:
        if self.step_index is None:
            self._init_step_index(timestep)
        sigma_ve = float(self.sigmas[self.step_index])  # Euler's x = x_t / alpha, x_t = alpha x_0 + sigma eps
        alpha = (1 + sigma_ve ** 2) ** -0.5
        return alpha, sigma_ve * alpha, 1 / alpha


# Fast samplers for a DDPM-trained model, with the settings that keep them stable on a T = 1000 model.
# At t = 999 alpha_bar is 4e-5 on the linear schedule (~1e-9 on squaredcos_cap_v2), so the x_0 derived from
# eps in the first steps is the eps error times ~150 (~3e4): every sampler clips x_0 to the data range, and
# all clip it the way DDIM does (clip x_0, keep the model's eps): diffusers' `thresholding` instead keeps
# what the clip removed in the state and broke samples with a large ||x_T|| (the Clipped* classes above, issue 12).
# A first-order last step to sigma = 0 keeps the multistep solvers from leaving noise behind.
SCHEDULERS = {
    "ddpm": (DDPMScheduler, dict(clip_sample=True)),
    "ddim": (DDIMScheduler, dict(clip_sample=True, timestep_spacing="trailing", set_alpha_to_one=True)),
    "dpmsolver": (ClippedDPMSolverMultistepScheduler, dict(
        algorithm_type="dpmsolver++", solver_order=2, thresholding=False,
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing="trailing")),
    # the stochastic variant (SDE-DPM-Solver++, Lu et al. 2022): fresh noise in every step, as DDPM's ancestral
    # steps, so that errors of the model's eps are not carried along a deterministic path (issue 12)
    "dpmsolver_sde": (ClippedDPMSolverMultistepScheduler, dict(
        algorithm_type="sde-dpmsolver++", solver_order=2, thresholding=False,
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing="trailing")),
    "euler": (ClippedEulerDiscreteScheduler, dict(timestep_spacing="trailing")),
    "unipc": (ClippedUniPCMultistepScheduler, dict(
        thresholding=False, lower_order_final=True, timestep_spacing="trailing")),
}


SAMPLER_ALIASES = {"dpmsolver++": "dpmsolver", "dpm-solver++": "dpmsolver", "sde-dpmsolver++": "dpmsolver_sde"}
SAMPLER_NAMES = sorted(SCHEDULERS) + sorted(SAMPLER_ALIASES)


def sampler_name(name: str) -> str:
    """The canonical SCHEDULERS key of a sampler name or alias (``dpmsolver++`` -> ``dpmsolver``), any case."""
    canonical = SAMPLER_ALIASES.get(name.lower(), name.lower())
    if canonical not in SCHEDULERS:
        raise InputError(f"scheduler {name!r} is unknown; use one of {SAMPLER_NAMES}")
    return canonical


def check_inference_steps(scheduler, num_inference_steps: int) -> None:
    """Let the sampler judge ``num_inference_steps`` before anything is written: DDPM and DDIM refuse more
    steps than the training T, which diffusers would only say at the first denoising call."""
    try:
        scheduler.set_timesteps(num_inference_steps)
    except ValueError:
        limit = scheduler.config.num_train_timesteps
        raise InputError(f"num_inference_steps {num_inference_steps}: the {type(scheduler).__name__} sampler takes "
                         f"at most the model's training T = {limit} steps; pass {limit} or fewer") from None


def make_scheduler(name: str, config):
    """A sampler ``name`` (one of SCHEDULERS or an alias) built from a trained model's scheduler config.

    ``from_config`` carries the training schedule (betas, T, prediction_type) over; the overrides above
    make the fast samplers safe on it.
    """
    cls, overrides = SCHEDULERS[sampler_name(name)]
    return cls.from_config(config, **overrides)
