"""A pipeline folder with the EMA weights of a train_ddpm.py checkpoint, to measure a run before it ends.

train_ddpm.py writes the pipeline (EMA weights) only when the run finishes; its checkpoints hold the EMA as an
accelerate custom state (diffusers' ``EMAModel.state_dict``). This rebuilds the UNet from the run's
training_config.json, loads the EMA shadow parameters into it and saves the pipeline as train_ddpm.py would
(the same weights, bit for bit, as the pipeline of a run stopped at that step), so that
benchmarks/sampler_breakage.py, sample.py etc. can read it.

    python benchmarks/checkpoint_pipeline.py runs/ddpm/checkpoint-500 runs/ddpm_step500
"""

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint", help="<output_dir>/checkpoint-<step> of a train_ddpm.py run trained with --use_ema.")
    p.add_argument("output_dir", help="New pipeline folder.")
    return p.parse_args()


def main(args) -> None:
    from diffusers import DDPMScheduler, UNet2DModel

    from kface.utils.errors import KfaceError
    from kface.diffusion import ClassConditionalDDPMPipeline

    ckpt = Path(args.checkpoint)
    config_path = ckpt.parent / "training_config.json"
    if not config_path.exists():
        raise KfaceError(f"{config_path}: missing; pass a checkpoint folder inside a train_ddpm.py --output_dir")
    config = json.loads(config_path.read_text())
    states = [torch.load(f, map_location="cpu", weights_only=False) for f in sorted(ckpt.glob("custom_checkpoint_*.pkl"))]
    emas = [s for s in states if isinstance(s, dict) and "shadow_params" in s]
    if not emas:
        raise KfaceError(f"{ckpt}: no EMA state in it; the run was trained without --use_ema")
    unet = UNet2DModel(**{k: v for k, v in config["unet"].items() if not k.startswith("_")}).eval()
    with torch.no_grad():
        for param, shadow in zip(unet.parameters(), emas[0]["shadow_params"], strict=True):
            param.copy_(shadow)
    scheduler = DDPMScheduler(num_train_timesteps=config["ddpm_num_steps"], beta_schedule=config["beta_schedule"],
                              prediction_type=config["prediction_type"])
    ClassConditionalDDPMPipeline(unet, scheduler, class_names=config["class_names"]).save_pretrained(args.output_dir)
    print(f"{args.output_dir}: EMA weights of {ckpt} (EMA step {emas[0].get('optimization_step')})")


if __name__ == "__main__":
    from kface.utils.errors import run_cli

    run_cli(main, parse_args())
