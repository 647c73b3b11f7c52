"""Who the synthetic identities are: attribute tables, look-alike pairs, and the per-photo variation of a face.

An identity's attributes depend only on (seed, identity); a photo's appearance only on its own generator."""

import numpy as np

# How far look-alike mates differ; measured with benchmarks/synthetic_difficulty.py (docs/synthetic.md)
DEFAULT_DISTINCTNESS = 0.6

# Attribute tables. Pair-mates share the "shared" ones; "individual" ones are the small differences.
SKIN_TONES = [(236, 200, 176), (226, 184, 152), (214, 170, 140), (242, 210, 190), (200, 150, 118),
              (230, 192, 160), (220, 178, 150), (246, 214, 194)]
HAIR_COLOURS = {"black": (28, 24, 26), "dark_brown": (58, 40, 30), "brown": (104, 70, 46),
                "ash_blonde": (168, 146, 112), "auburn": (118, 52, 36), "blue_black": (24, 28, 44)}
HAIR_STYLES = ("short", "bob", "long", "bangs", "parted")
EYE_SHAPES = {"narrow": 0.36, "almond": 0.44, "round": 0.52}  # typical eye height / eye width
MOLE_SPOTS = {"left_cheek": (-0.22, 0.12), "right_cheek": (0.24, 0.08), "upper_lip": (0.12, 0.25),
              "chin": (-0.08, 0.40), "under_eye": (0.20, -0.02)}


def rng_for(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(k) for k in keys]))


def identity_attributes(seed: int, identity: int, num_identities: int,
                        distinctness: float = DEFAULT_DISTINCTNESS) -> dict:
    """Attributes of one identity, from (seed, identity) only.

    Identities ``2p`` and ``2p+1`` form pair ``p``: they share skin, hair and face shape (drawn from the pair's
    stream) and differ in a few small features (drawn from the identity's stream, and scaled by
    ``distinctness``: 0 makes the mates identical, larger makes them easier to tell apart).
    """
    pair = identity // 2
    mate = identity ^ 1 if (identity ^ 1) < num_identities else None
    prng = rng_for(seed, 1, pair)
    # pairs take skin, hair colour and hair style from seed-wide shuffles, so that different pairs differ
    order = rng_for(seed, 0)
    skins, colours, styles = (order.permutation(len(t)) for t in (SKIN_TONES, HAIR_COLOURS, HAIR_STYLES))
    shared = {
        "skin": [int(c) for c in np.clip(np.array(SKIN_TONES[skins[pair % len(skins)]])
                                         + prng.normal(0, 4, 3), 0, 255)],
        "hair_colour": list(HAIR_COLOURS)[colours[pair % len(colours)]],
        "hair_style": HAIR_STYLES[styles[(pair + pair // len(styles)) % len(styles)]],
        "face_width": round(float(prng.uniform(0.70, 0.84)), 3),  # oval width / height
        "jaw_taper": round(float(prng.uniform(0.10, 0.32)), 3),
        "lip_colour": [int(c) for c in prng.uniform([170, 80, 80], [215, 120, 120])],
        "iris_colour": [int(c) for c in prng.uniform([40, 24, 16], [90, 60, 40])],
    }
    # The pair's baseline for the small features; each mate sits on one side of it (sign = +-1) so that the
    # two always differ by ``distinctness`` times a fixed step, plus a little individual noise.
    base = {"eye_size": prng.uniform(0.17, 0.2), "brow_thickness": prng.uniform(0.035, 0.05),
            "brow_arch": prng.uniform(0.02, 0.05), "mouth_width": prng.uniform(0.30, 0.36)}
    sign = 1.0 if identity % 2 == 0 else -1.0
    irng = rng_for(seed, 2, identity)
    pair_aspect = list(EYE_SHAPES.values())[prng.integers(len(EYE_SHAPES))]
    aspect = pair_aspect * (1 + 0.1 * sign * distinctness)
    # one mate of every pair gets a distinctive marker (a mole or a liking for glasses), the other does not
    marker_holder = int(prng.integers(2))
    marker = ("mole", "glasses")[prng.integers(2)]
    holds = (identity % 2) == marker_holder
    base_tilt = prng.uniform(-0.06, 0.10)
    # below 1, distinctness also fades the marker and pulls the tilts together: at 0 the mates are twins
    strength = min(1.0, max(0.0, distinctness))
    individual = {
        "eye_shape": min(EYE_SHAPES, key=lambda k: abs(EYE_SHAPES[k] - aspect)),
        "eye_aspect": round(float(aspect), 4),
        "eye_size": round(float(base["eye_size"] * (1 + 0.05 * sign * distinctness)), 4),
        "eye_tilt": round(float(base_tilt + (irng.uniform(-0.06, 0.10) - base_tilt) * strength), 3),
        "brow_thickness": round(float(base["brow_thickness"] * (1 + 0.15 * sign * distinctness)), 4),
        "brow_arch": round(float(base["brow_arch"] * (1 - 0.3 * sign * distinctness)), 4),
        "mouth_width": round(float(base["mouth_width"] * (1 + 0.06 * sign * distinctness)), 4),
        "mole": list(MOLE_SPOTS)[irng.integers(len(MOLE_SPOTS))] if holds and marker == "mole" else None,
        "glasses_rate": round(float(irng.uniform(0.4, 0.6) * strength), 2) if holds and marker == "glasses" else 0.0,
        "glasses_style": ("round", "square")[irng.integers(2)],
    }
    individual["mole_contrast"] = strength if individual["mole"] else None
    if not individual["glasses_rate"]:
        individual["glasses_style"] = None
    return {"identity": f"{identity:04d}", "pair": pair, "mate": None if mate is None else f"{mate:04d}",
            "shared": shared, "individual": individual}


def all_identities(seed: int, num_identities: int, distinctness: float = DEFAULT_DISTINCTNESS) -> list[dict]:
    """Every identity's attributes, each with ``differs_from_mate``: the small features that tell the pair apart."""
    ids = [identity_attributes(seed, i, num_identities, distinctness) for i in range(num_identities)]
    for attrs in ids:
        mate = ids[int(attrs["mate"])]["individual"] if attrs["mate"] else attrs["individual"]
        attrs["differs_from_mate"] = [k for k, v in attrs["individual"].items() if mate[k] != v]
    return ids


# --------------------------------------------------------------------------------------------- face pose
def sample_appearance(attrs: dict, rng: np.random.Generator, occluder_rate: float = 0.12) -> dict:
    """Per-photo variation of one identity: pose, expression, blinking, lighting, glasses, occluders."""
    ind = attrs["individual"]
    occluder = None
    if rng.random() < occluder_rate:
        # masks hide half the face from MTCNN too, so they are the rarest occluder
        occluder = ("hat", "hat", "hand", "hand", "mask")[rng.integers(5)]
    return {
        "yaw": float(rng.uniform(-0.45, 0.45)),
        "roll": float(rng.normal(0, 8.0)),
        "expression": ("neutral", "smile", "smile", "open", "pout")[rng.integers(5)],
        "blink": bool(rng.random() < 0.08),
        # squinting, wide eyes and raised brows blur the small cues that tell look-alike mates apart
        "eye_open": float(rng.uniform(0.85, 1.15)),
        "brow_raise": float(rng.normal(0, 0.012)),
        "gaze": float(rng.uniform(-0.25, 0.25)),
        "light": [float(v) for v in (rng.uniform(-0.8, 0.8), rng.uniform(-0.7, 0.2), rng.uniform(0.6, 1.0))],
        "glasses": bool(rng.random() < ind["glasses_rate"]),
        "occluder": occluder,
        "occluder_colour": [int(c) for c in rng.integers(30, 240, 3)],
        "clothes": [int(c) for c in rng.integers(20, 230, 3)],
        "hair_jitter": float(rng.uniform(-0.04, 0.04)),
    }
