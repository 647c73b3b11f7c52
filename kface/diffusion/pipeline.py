"""Class-conditional DDPM sampling with classifier-free guidance, as a diffusers pipeline.

``ClassConditionalDDPMPipeline`` holds a ``UNet2DModel`` whose class embedding has one row per class plus a
last, null row (the unconditional model of classifier-free guidance), and any diffusers scheduler. The class
names live in the pipeline config (``model_index.json``), so ``save_pretrained`` / ``from_pretrained`` keep them.

    pipe = ClassConditionalDDPMPipeline.from_pretrained("out/ddpm")          # a folder or a Hub id
    pipe.scheduler = make_scheduler("dpmsolver_sde", pipe.scheduler.config)   # kface.diffusion.schedulers
    images = pipe(class_labels=["0003"] * 4, guidance_scale=3.0, num_inference_steps=10).images
"""

import inspect

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor

from ..samples import class_ids
from ..utils.errors import InputError

OUTPUT_TYPES = ("pil", "np", "pt", "uint8")


def guided_denoiser(unet, class_ids: torch.Tensor, null_id: int, guidance_scale: float):
    """The network output used for sampling at guidance scale ``w``: a function ``denoise(x, t)``.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6): eps = eps_null + w * (eps_cond - eps_null).
    Their eq. 6 writes (1 + w') eps_cond - w' eps_null, i.e. our w = 1 + w'. w = 1 is plain conditional
    sampling and w = 0 unconditional; both skip the other half of the batch, which halves the cost.
    Otherwise the conditional and null inputs run as one batched forward. The same mixing applies to
    v-prediction models (v is affine in eps for fixed x and t).
    """
    null_ids = torch.full_like(class_ids, null_id)

    def forward(x, t, labels):
        return unet(x, t.expand(x.shape[0]), class_labels=labels).sample

    def denoise(x, t):
        if guidance_scale == 1.0:
            return forward(x, t, class_ids)
        if guidance_scale == 0.0:
            return forward(x, t, null_ids)
        out_cond, out_null = forward(torch.cat([x, x]), t, torch.cat([class_ids, null_ids])).chunk(2)
        return out_null + guidance_scale * (out_cond - out_null)

    return denoise


class ClassConditionalDDPMPipeline(DiffusionPipeline):
    """Sample images of given classes from a class-conditional UNet2DModel with classifier-free guidance.

    Args:
        unet: ``UNet2DModel`` with ``num_class_embeds = len(class_names) + 1`` (last index = null class).
        scheduler: any diffusers scheduler (DDPM, DDIM, DPMSolverMultistep, Euler, UniPC, ...).
        class_names: name of each class id, stored in the pipeline config.
    """

    model_cpu_offload_seq = "unet"

    def __init__(self, unet, scheduler, class_names: list[str] | None = None):
        super().__init__()
        num_embeds = unet.config.num_class_embeds
        if not num_embeds or num_embeds < 2:
            raise ValueError("unet is not class-conditional: it needs num_class_embeds = num_classes + 1")
        if isinstance(class_names, str) or (class_names is not None and not all(isinstance(n, str)
                                                                               for n in class_names)):
            # list("abc") would make three one-letter classes: a hand-edited model_index.json, not a name list
            raise ValueError(f"class_names must be a list of strings, not {str(class_names)[:60]!r}")
        class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_embeds - 1)]
        if len(class_names) != num_embeds - 1:
            raise ValueError(f"class_names: {len(class_names)} names for a UNet with {num_embeds - 1} classes "
                             "(num_class_embeds - 1, the last one being the null class)")
        self.register_modules(unet=unet, scheduler=scheduler)
        self.register_to_config(class_names=class_names)

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def null_class_id(self) -> int:
        return len(self.config.class_names)

    def class_ids(self, class_labels) -> torch.Tensor:
        """Class names or ids (a list, or a 1-D tensor of ids) as a LongTensor of ids (``kface.samples.class_ids``)."""
        return torch.tensor(class_ids(self.class_names, class_labels), dtype=torch.long,
                            device=self._execution_device)

    @torch.no_grad()
    def __call__(self, class_labels, guidance_scale: float = 1.0, num_inference_steps: int = 1000,
                 generator: torch.Generator | list[torch.Generator] | None = None,
                 output_type: str = "pil", return_dict: bool = True):
        """Generate one image per entry of ``class_labels`` (names or ids).

        ``generator`` may be a list with one generator per image: image i then depends only on its own
        generator, whatever the batch (noise is drawn per image, at the start and in stochastic steps).
        ``output_type``: "pil", "np" (float NHWC in [0, 1]), "pt" (float NCHW in [0, 1]) or "uint8"
        (uint8 NCHW tensor).
        """
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type {output_type!r}: use one of {OUTPUT_TYPES}")
        class_ids = self.class_ids(class_labels)
        if isinstance(generator, list) and len(generator) != len(class_ids):
            raise ValueError(f"generator: {len(generator)} generators for {len(class_ids)} images: give one per image")
        x = self.p_sample_loop(class_ids, guidance_scale, num_inference_steps, generator)
        if not bool(torch.isfinite(x).all()):  # one sync per batch; NaN would become black PNGs
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise InputError(f"{bad} of {len(x)} images came out non-finite (NaN or inf) at guidance_scale "
                             f"{guidance_scale:g}; use a smaller guidance scale (1-10 is the usual range), or check "
                             "the model (a diverged training run)")
        images = (x / 2 + 0.5).clamp(0, 1)
        images = self._convert(images, output_type)
        return ImagePipelineOutput(images=images) if return_dict else (images,)

    def p_sample_loop(self, class_ids, guidance_scale: float, num_inference_steps: int, generator):
        """Run the reverse process from pure noise to x_0 in [-1, 1] (roughly; schedulers may clip)."""
        config = self.unet.config
        shape = (len(class_ids), config.in_channels, config.sample_size, config.sample_size)
        x = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype)
        x = x * self.scheduler.init_noise_sigma
        denoise = guided_denoiser(self.unet, class_ids, self.null_class_id, float(guidance_scale))
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        # stochastic samplers take the generator(s); deterministic ones (e.g. UniPC) have no such argument
        takes_generator = "generator" in inspect.signature(self.scheduler.step).parameters
        step_kwargs = {"generator": generator} if takes_generator else {}
        for t in self.progress_bar(self.scheduler.timesteps):
            model_output = denoise(self.scheduler.scale_model_input(x, t), t)
            x = self.scheduler.step(model_output, t, x, **step_kwargs).prev_sample
        return x

    def _convert(self, images: torch.Tensor, output_type: str):
        if output_type == "pt":
            return images.float()
        if output_type == "uint8":
            return (images.float() * 255).round().to(torch.uint8)
        array = images.float().permute(0, 2, 3, 1).cpu().numpy()
        return array if output_type == "np" else self.numpy_to_pil(array)


def image_generators(seed: int, class_ids, indices, device="cpu") -> list[torch.Generator]:
    """One generator per image, seeded from (seed, class id, index within the class) only.

    ``numpy.random.SeedSequence`` mixes the three numbers into independent streams (no collisions
    between e.g. (0, 1, 0) and (0, 0, 1), unlike sums of offsets), so image i of class c is the same
    whatever the batch it is drawn in, how the work is sharded, or which other classes are sampled.
    """
    gens = []
    for c, i in zip(class_ids, indices, strict=True):
        state = np.random.SeedSequence([int(seed), int(c), int(i)]).generate_state(1, dtype=np.uint64)[0]
        gens.append(torch.Generator(device).manual_seed(int(state) & (2**63 - 1)))
    return gens
