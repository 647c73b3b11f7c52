"""Fidelity, coverage and memorisation per identity, and the verdict: kept, caricatured, lost or copied.

RCA is a ratio of accuracies: a generator that draws each identity with its real variety, one that draws a
few prototypical faces the oracle finds easy, and one that copies its training photos back can all score
RCA >= 1. Three measurements tell them apart, per class, in a feature space (the oracle's, and Inception's
when its weights are there):

- **Precision and recall** (Kynkäänniemi et al. 2019) and **density and coverage** (Naeem et al. 2020), on
  k-nearest-neighbour balls. Precision: the share of generated images inside some real image's ball (look
  like real ones); recall: the share of real images inside some generated image's ball; density: the mean
  number of real balls a generated image falls in, over k; coverage: the share of real images whose ball
  holds a generated image (the real variety that is drawn). :func:`prdc` is the ``prdc`` package's
  ``compute_prdc`` (tested equal), written on one distance matrix so that the bootstrap reuses it.
- **The reference set** is the real *train* split of the class: the larger real split (k-NN radii on ~35
  test images per class are biased), and the images the generator learned from, so coverage reads "how
  much of what it was shown does it draw". **The ceiling** is the same number with the real *test* split in
  place of the generated images: what a perfect generator, as many images as the test split, would get.
- **Memorisation**: each generated image's nearest training image, in the oracle's features and in pixels,
  against the same distance for the real test images. A generated image is a *copy* when it is closer to a
  training image than all but ``percentile`` % of the real test images are, in both spaces: pixels alone
  would call a blurry average face a copy, the oracle's features alone a new photo of the same person (that
  is what an identity classifier's features are trained to do).

Bootstrap intervals are percentile intervals over class-stratified resamples of the images each number
averages over (generated images for precision and density, real ones for recall and coverage), the other
set held whole and the k-NN balls at the full sets' radii (a resample that repeats an image would otherwise
give it a zero radius). The interval is the sampling error of that average; the smallness of the real sets,
which biases the radii themselves, shows in the real-vs-real ceiling instead. Everything is a pure numpy
function; evaluate.py passes the features in.
"""

import numpy as np
from sklearn.metrics import pairwise_distances

from ..utils.errors import InputError
from .rca import check_resamples

DEFAULT_K = 5  # Naeem et al.'s choice; a class needs more than k images on each side
COPY_PERCENTILE = 5.0  # a copy is closer to a training image than 95% of the real test images are
PRDC_KEYS = ("precision", "recall", "density", "coverage")
REFERENCE = ("real train split of each class (the larger real split, and what the generator learned from); "
             "ceiling: the real test split of the class in place of the generated images")

# The verdict's thresholds, defined here only (report.md and the demo print them with the verdicts).
THRESHOLDS = {
    "copied_share": 0.25,  # copied: at least this share of the class's generated images are copies
    "lost_rca": 0.7,  # lost: class RCA below this (the oracle finds the identity in < 7 of 10 it finds in real)
    "lost_precision_ratio": 0.25,  # lost: precision below this share of the real-vs-real precision
    "caricature_ratio": 0.5,  # caricatured: coverage or recall below this share of the real-vs-real value
}


def knn_radii(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself, at 0, is not counted)."""
    d = pairwise_distances(features, metric="euclidean", n_jobs=1)
    return np.partition(d, k, axis=1)[:, k]


def _prdc_counts(d_rf, r_real, r_fake, k, c_real, c_fake, keys=PRDC_KEYS) -> dict:
    """P/R/D/C (those in ``keys``) for ``(B, n)`` multiplicities of the real and fake points (all ones: the
    sets as they are)."""
    # float32: the counts are small integers (exact below 2^24), and the products take half the time
    in_real = (d_rf < r_real[:, None]).astype(np.float32)  # fake j inside real i's ball
    in_fake = (d_rf < r_fake[None, :]).astype(np.float32)  # real i inside fake j's ball
    c_real, c_fake = c_real.astype(np.float32), c_fake.astype(np.float32)
    n_real, n_fake = c_real.sum(axis=1, dtype=np.float64), c_fake.sum(axis=1, dtype=np.float64)
    out = {}
    if "precision" in keys or "density" in keys:
        hits = c_real @ in_real  # (B, n_fake): real balls (with multiplicity) holding each fake
        out["precision"] = (c_fake * (hits > 0)).sum(axis=1, dtype=np.float64) / n_fake
        out["density"] = (c_fake * hits).sum(axis=1, dtype=np.float64) / (k * n_fake)
    if "recall" in keys:
        out["recall"] = (c_real * ((c_fake @ in_fake.T) > 0)).sum(axis=1, dtype=np.float64) / n_real
    if "coverage" in keys:
        out["coverage"] = (c_real * ((c_fake @ in_real.T) > 0)).sum(axis=1, dtype=np.float64) / n_real
    return {key: out[key] for key in keys}


def prdc(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_K) -> dict:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features (``prdc.compute_prdc``)."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    _check_sizes(len(real), len(fake), k)
    d_rf = pairwise_distances(real, fake, metric="euclidean", n_jobs=1)
    out = _prdc_counts(d_rf, knn_radii(real, k), knn_radii(fake, k), k, np.ones((1, len(real))),
                       np.ones((1, len(fake))))
    return {key: float(v[0]) for key, v in out.items()}


def _check_sizes(n_real: int, n_fake: int, k: int) -> None:
    if k < 1:
        raise InputError(f"k: at least 1, got {k}")
    if min(n_real, n_fake) <= k:
        raise InputError(f"{n_real} real and {n_fake} generated image(s): k-NN balls with k = {k} need more than "
                         f"{k} on each side")


def _stratified_counts(strata: np.ndarray, num_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """``(B, n)`` multiplicities of a bootstrap that resamples each stratum (class) to its own size."""
    counts = np.zeros((num_resamples, len(strata)))
    rows = np.arange(num_resamples)[:, None]
    for s in np.unique(strata):
        idx = np.flatnonzero(strata == s)
        draws = rng.integers(0, len(idx), size=(num_resamples, len(idx)))  # indices drawn with replacement
        counts[:, idx] = np.bincount((rows * len(idx) + draws).ravel(),
                                     minlength=num_resamples * len(idx)).reshape(num_resamples, len(idx))
    return counts


def prdc_with_interval(real, fake, *, k: int = DEFAULT_K, num_resamples: int = 0, rng=None, real_strata=None,
                       fake_strata=None, level: float = 0.95, real_radii=None) -> dict:
    """:func:`prdc` and, with ``num_resamples``, percentile intervals over stratified resamples of both sets;
    ``{"unavailable": why}`` when a side has k images or fewer. ``real_radii``: :func:`knn_radii` of ``real``,
    when the caller has them (one reference set against several)."""
    real, fake = np.asarray(real, dtype=np.float64), np.asarray(fake, dtype=np.float64)
    try:
        _check_sizes(len(real), len(fake), k)
    except InputError as err:
        return {"unavailable": str(err), "num_real": len(real), "num_gen": len(fake)}
    d_rf = pairwise_distances(real, fake, metric="euclidean", n_jobs=1)
    r_real = knn_radii(real, k) if real_radii is None else real_radii
    r_fake = knn_radii(fake, k)
    point = _prdc_counts(d_rf, r_real, r_fake, k, np.ones((1, len(real))), np.ones((1, len(fake))))
    out = {key: float(v[0]) for key, v in point.items()}
    out.update(num_real=len(real), num_gen=len(fake))
    if num_resamples:
        check_resamples(num_resamples)
        rng = rng or np.random.default_rng(0)
        c_real = _stratified_counts(np.zeros(len(real)) if real_strata is None else real_strata, num_resamples, rng)
        c_fake = _stratified_counts(np.zeros(len(fake)) if fake_strata is None else fake_strata, num_resamples, rng)
        # each number resamples the images it averages over, the other set held whole: a resample holds only
        # ~63% of a set's distinct images, so resampling the balls' side too would bias every "inside some
        # ball" count down (coverage of real test images against themselves fell below its own estimate)
        boot = {**_prdc_counts(d_rf, r_real, r_fake, k, np.ones((1, len(real))), c_fake, ("precision", "density")),
                **_prdc_counts(d_rf, r_real, r_fake, k, c_real, np.ones((1, len(fake))), ("recall", "coverage"))}
        alpha = (1 - level) / 2 * 100
        out["interval"] = {key: [float(x) for x in np.percentile(boot[key], [alpha, 100 - alpha])] for key in PRDC_KEYS}
    return out


def fidelity_metrics(ref, ref_labels, gen, gen_labels, test, test_labels, class_names: list[str], *,
                     k: int = DEFAULT_K, num_resamples: int = 0, seed: int = 0, level: float = 0.95,
                     space: str = "oracle") -> dict:
    """Per class and global: P/R/D/C of the generated features (``generated``) and of the real test features
    (``real``, the ceiling) against the real train features of the class (global: of all sampled classes)."""
    ref_labels, gen_labels, test_labels = map(np.asarray, (ref_labels, gen_labels, test_labels))
    rng = np.random.default_rng(seed)
    kw = dict(k=k, num_resamples=num_resamples, rng=rng, level=level)
    per_class = {}
    for c, name in enumerate(class_names):
        if not (gen_labels == c).any():  # sample.py --classes: a class that was not sampled
            continue
        r = ref[ref_labels == c]
        radii = knn_radii(r, k) if len(r) > k else None
        per_class[name] = {"generated": prdc_with_interval(r, gen[gen_labels == c], real_radii=radii, **kw),
                           "real": prdc_with_interval(r, test[test_labels == c], real_radii=radii, **kw)}
    sampled = np.isin(ref_labels, np.unique(gen_labels))
    radii = knn_radii(ref[sampled], k) if sampled.sum() > k else None
    glob = {"generated": prdc_with_interval(ref[sampled], gen, real_strata=ref_labels[sampled],
                                            fake_strata=gen_labels, real_radii=radii, **kw),
            "real": prdc_with_interval(ref[sampled], test, real_strata=ref_labels[sampled],
                                       fake_strata=test_labels, real_radii=radii, **kw)}
    return {"space": space, "k": k, "reference": REFERENCE, "per_class": per_class, "global": glob,
            "bootstrap": {"num_resamples": num_resamples, "seed": seed, "level": level,
                          "method": "percentile, class-stratified; generated images resampled for precision and "
                                    "density, real ones for recall and coverage; k-NN radii of the full sets"}
            if num_resamples else None}


def _nearest(train: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = pairwise_distances(x, train, metric="euclidean", n_jobs=1)
    idx = d.argmin(axis=1)
    return d[np.arange(len(x)), idx], idx


def pixels(images: np.ndarray) -> np.ndarray:
    """uint8 NCHW -> float32 rows in [0, 1] / sqrt(dims): Euclidean distances become RMS pixel differences."""
    x = np.asarray(images, dtype=np.float32).reshape(len(images), -1) / 255.0
    return x / np.sqrt(max(x.shape[1], 1))


def memorisation(train_feats, train_images, gen_feats, gen_images, gen_labels, test_feats, test_images, test_labels,
                 class_names: list[str], *, percentile: float = COPY_PERCENTILE, num_pairs: int = 16) -> dict:
    """Nearest training image of every generated and real test image, in the oracle's features and in pixels.

    A *copy*: a generated image closer to its nearest training image than ``percentile`` % of the real test
    images are to theirs, in both spaces (thresholds from the pooled real test images). ``share`` per class
    and global; ``share_real`` is the same rule on the real test images (the false-alarm rate, about
    ``percentile`` % or less). ``pairs``: the ``num_pairs`` generated images nearest a training image in pixels,
    relative to the threshold, with that training image (indices into the two sets).
    """
    if len(test_images) < 2 or len(train_images) < 1:
        raise InputError(f"{len(test_images)} real test and {len(train_images)} train image(s): memorisation needs "
                         "2 test images and 1 train image")
    gen_labels, test_labels = np.asarray(gen_labels), np.asarray(test_labels)
    spaces = {"oracle": (train_feats, gen_feats, test_feats),
              "pixels": (pixels(train_images), pixels(gen_images), pixels(test_images))}
    dist, thresholds, nearest = {}, {}, None
    for space, (tr, g, te) in spaces.items():
        d_gen, i_gen = _nearest(tr, g)
        d_test, _ = _nearest(tr, te)
        thresholds[space] = float(np.percentile(d_test, percentile))
        dist[space] = (d_gen, d_test)
        nearest = i_gen if space == "pixels" else nearest
    copy_gen = np.all([dist[s][0] < thresholds[s] for s in spaces], axis=0)
    copy_test = np.all([dist[s][1] < thresholds[s] for s in spaces], axis=0)
    per_class = {}
    for c, name in enumerate(class_names):
        g, t = gen_labels == c, test_labels == c
        if not g.any():
            continue
        per_class[name] = {"share": float(copy_gen[g].mean()), "copies": int(copy_gen[g].sum()),
                           "num_gen": int(g.sum()),
                           "share_real": float(copy_test[t].mean()) if t.any() else None,
                           **{f"median_{s}": {"generated": float(np.median(dist[s][0][g])),
                                              "real": float(np.median(dist[s][1][t])) if t.any() else None}
                              for s in spaces}}
    order = np.argsort(dist["pixels"][0] / max(thresholds["pixels"], 1e-12))[:num_pairs]
    return {"percentile": percentile, "thresholds": thresholds, "share": float(copy_gen.mean()),
            "share_real": float(copy_test.mean()), "copies": int(copy_gen.sum()), "per_class": per_class,
            "pairs": [{"generated": int(i), "train": int(nearest[i]), "class": class_names[int(gen_labels[i])],
                       "pixels": float(dist["pixels"][0][i]), "oracle": float(dist["oracle"][0][i]),
                       "copy": bool(copy_gen[i])} for i in order],
            "definition": (f"copy: nearer its nearest training image than {100 - percentile:g}% of the real test "
                           "images are to theirs, in the oracle's features and in pixels (RMS difference) both")}


def _ratio(a, b):
    return a / b if a is not None and b else None


def class_verdict(class_rca, prdc_gen: dict | None, prdc_real: dict | None, copy_share, confused_with,
                  thresholds: dict = THRESHOLDS) -> dict:
    """kept / caricatured / lost / copied for one class, with the numbers it was decided on and why."""
    t = thresholds
    gen, real = prdc_gen or {}, prdc_real or {}
    ratios = {key: _ratio(gen.get(key), real.get(key)) for key in ("precision", "recall", "coverage")}
    out = {"class_rca": class_rca, "copy_share": copy_share, **{f"{k}_ratio": v for k, v in ratios.items()}}
    if copy_share is not None and copy_share >= t["copied_share"]:
        return {**out, "verdict": "copied",
                "why": f"{copy_share:.2f} of its images are copies (>= {t['copied_share']})"}
    if class_rca is not None and class_rca < t["lost_rca"]:
        return {**out, "verdict": "lost", "confused_with": confused_with,
                "why": f"class RCA {class_rca:.2f} < {t['lost_rca']}" + (f"; taken for {confused_with}"
                                                                         if confused_with else "")}
    if ratios["precision"] is not None and ratios["precision"] < t["lost_precision_ratio"]:
        return {**out, "verdict": "lost", "confused_with": confused_with,
                "why": f"precision {ratios['precision']:.2f} of real < {t['lost_precision_ratio']}: drawn off the "
                       "real faces of the class"}
    low = [k for k in ("coverage", "recall") if ratios[k] is not None and ratios[k] < t["caricature_ratio"]]
    if low:
        return {**out, "verdict": "caricatured",
                "why": ", ".join(f"{k} {ratios[k]:.2f} of real" for k in low) + f" < {t['caricature_ratio']}"}
    if class_rca is None:
        return {**out, "verdict": "unknown", "why": "no class RCA (no real test image right)"}
    return {**out, "verdict": "kept", "why": f"class RCA {class_rca:.2f}, coverage and recall near real"}


def verdicts(identity: dict, fidelity: dict | None, memo: dict | None, thresholds: dict = THRESHOLDS) -> dict:
    """One verdict per sampled class, from the identity metrics, the oracle-space P/R/D/C and memorisation."""
    out = {}
    for name in identity["class_names"]:
        if identity["per_class"][name]["gen"]["support"] == 0:
            continue
        fid = (fidelity or {}).get("per_class", {}).get(name, {})
        gen, real = fid.get("generated"), fid.get("real")
        gen = None if gen is None or "unavailable" in gen else gen
        real = None if real is None or "unavailable" in real else real
        copy_share = ((memo or {}).get("per_class", {}).get(name) or {}).get("share")
        out[name] = class_verdict(identity["per_class"][name].get("class_rca"), gen, real, copy_share,
                                  identity.get("identity_loss", {}).get(name, {}).get("label"), thresholds)
    return {"per_class": out, "thresholds": dict(thresholds),
            "counts": {v: sum(r["verdict"] == v for r in out.values())
                       for v in ("kept", "caricatured", "lost", "copied", "unknown")}}




def fidelity_section(train_feats, train, gen_feats, gen, test_feats, test, class_names: list[str], identity: dict, *,
                     k: int = DEFAULT_K, num_resamples: int = 0, seed: int = 0,
                     percentile: float = COPY_PERCENTILE) -> dict:
    """evaluate.py's three entries for one oracle: ``fidelity`` (P/R/D/C in its features, with the real-vs-real
    ceiling), ``memorisation`` (features and pixels) and ``verdicts``. ``train``, ``gen``, ``test``: ImageSets
    whose ``labels`` index ``class_names``; the ``*_feats`` are the oracle's features of their images."""
    fid = fidelity_metrics(train_feats, train.labels, gen_feats, gen.labels, test_feats, test.labels, class_names,
                           k=k, num_resamples=num_resamples, seed=seed)
    try:
        memo = memorisation(train_feats, train.images, gen_feats, gen.images, gen.labels, test_feats, test.images,
                            test.labels, class_names, percentile=percentile)
    except InputError as err:  # too few real images for a threshold: the other numbers still stand
        memo = {"skipped": str(err)}
    return {"fidelity": fid, "memorisation": memo, "verdicts": verdicts(identity, fid, memo)}
