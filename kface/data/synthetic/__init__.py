"""Synthetic look-alike identities: the embedded default dataset, a stand-in for KoIn10.

Faces are drawn procedurally (PIL ImageDraw on a supersampled canvas, numpy shading) into raw "photos":
scenes of 128-256 px with the face off-centre, background clutter, lighting and colour casts, noise,
occluders (masks, hats, hands), some scenes with a second face of another identity and a few with no face.
Identities come in look-alike pairs that share skin tone, hair and face shape and differ only in small
things (eye shape, brows, a mole, glasses, mouth width), so that an oracle at 32x32 is good but not perfect.

Everything is deterministic: an identity's attributes depend only on (seed, identity), and each image only
on (seed, identity, index), so output is byte-identical across runs and worker counts.

    python -m kface.data.synthetic --output_dir raw --num_identities 10 --images_per_identity 300 --seed 0

Output (KoIn-like): ``train/<id>/<index>.jpg``, ``test/<id>/<index>.jpg``, ``annotations.jsonl`` (one line per
image, ground-truth face boxes and keypoints), ``identities.json`` (what each identity looks like).
"""

from .dataset import generate, load_annotations, split_of
from .drawing import CANVAS, KEYPOINTS, render_face
from .identity import DEFAULT_DISTINCTNESS, all_identities, identity_attributes, sample_appearance
from .scenes import render_scene

__all__ = ["CANVAS", "DEFAULT_DISTINCTNESS", "KEYPOINTS", "all_identities", "generate", "identity_attributes",
           "load_annotations", "render_face", "render_scene", "sample_appearance", "split_of"]
