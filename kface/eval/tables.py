"""report.md's tables: the paper's Tables 3 and 4, the summary row, identity loss, diversity, the oracles side
by side, the low-level shift and the oracle Fréchet distance (metrics dict in, markdown out)."""


def _num(x, fmt=".3f") -> str:
    if isinstance(x, dict):
        return "skipped" if "skipped" in x else "-"
    return "-" if x is None else format(x, fmt)



def _ci(pair, dropped: int = 0) -> str:
    """`` [lo, hi]``, and how many bootstrap resamples had no ratio (real accuracy 0) and were left out."""
    text = "" if not pair or pair[0] is None else f" [{pair[0]:.3f}, {pair[1]:.3f}]"
    return text + (f" ({dropped} resamples dropped)" if dropped else "")


def _dropped(boot: dict | None, i: int | None = None, key: str = "rca") -> int:
    """Resamples dropped from the global ``key`` (``i`` None) or class ``i`` interval (0 for older metrics.json)."""
    d = (boot or {}).get("dropped") or {}
    return int(d.get(key, 0) if i is None else (d.get("class_rca") or [0] * (i + 1))[i])


def table4(metrics: dict) -> str:
    """Per class: real P/R/F1, generated P/R/F1, class RCA (with its bootstrap CI), and the global row."""
    ident, boot = metrics["identity"], metrics.get("bootstrap", {})
    cis = boot.get("class_rca") or [None] * len(ident["class_names"])
    lines = ["| Class | Real P | Real R | Real F1 | Gen P | Gen R | Gen F1 | Class RCA |",
             "|---|---|---|---|---|---|---|---|"]
    for i, (name, ci) in enumerate(zip(ident["class_names"], cis)):
        r, g = ident["per_class"][name]["real"], ident["per_class"][name]["gen"]
        lines.append(f"| {name} | {r['precision']:.2f} | {r['recall']:.2f} | {r['f1']:.2f} | {g['precision']:.2f} | "
                     f"{g['recall']:.2f} | {g['f1']:.2f} | {_num(ident['per_class'][name]['class_rca'], '.2f')}"
                     f"{_ci(ci, _dropped(boot, i))} |")
    lines.append(f"| **Global** | Accuracy: {ident['accuracy_real']:.3f} | | | Accuracy: {ident['accuracy_gen']:.3f} "
                 f"| | | **RCA: {_num(ident['rca'])}**{_ci(boot.get('rca'), _dropped(boot))} |")
    if ident.get("balanced_rca") is not None or "balanced_accuracy_real" in ident:
        lines.append(f"| **Class-balanced** | Mean recall: {_num(ident.get('balanced_accuracy_real'))} | | | Mean recall: "
                     f"{_num(ident.get('balanced_accuracy_gen'))} | | | **Balanced RCA: {_num(ident.get('balanced_rca'))}**"
                     f"{_ci(boot.get('balanced_rca'), _dropped(boot, key='balanced_rca'))} |")
    return "\n".join(lines)


def _with_ci(m: dict, key: str) -> str:
    """``value [lo, hi]`` of an identity ratio (``rca``, ``balanced_rca``) with its bootstrap interval."""
    boot = m.get("bootstrap") or {}
    return f"{_num(m['identity'].get(key))}{_ci(boot.get(key), _dropped(boot, key=key))}"


def identity_loss_table(metrics: dict) -> str:
    """Per class: the wrong label the oracle gives its generated images most often, generated vs real share."""
    ident = metrics["identity"]
    loss = ident.get("identity_loss")
    if not loss:
        return "Not computed (metrics.json from an older kface)."
    lines = ["| Class | Most often taken for | Share of generated | Share of real | Generated - real |",
             "|---|---|---:|---:|---:|"]
    for name in ident["class_names"]:
        row = loss[name]
        if row["label"] is None:
            lines.append(f"| {name} | (no wrong generated image) | 0.00 | - | - |")
            continue
        real = row["share_real"]
        gap = "-" if real is None else f"{row['share_gen'] - real:+.2f}"
        lines.append(f"| {name} | {row['label']} | {row['share_gen']:.2f} | {_num(real, '.2f')} | {gap} |")
    return "\n".join(lines)


def table3(metrics: dict) -> str:
    lpips = metrics.get("visual", {}).get("lpips", {})
    if "per_class" not in lpips:
        return f"LPIPS skipped: {lpips.get('skipped', 'visual metrics not computed (--no_visual)')}"
    lines = ["| Class | LPIPS diversity ↑ |", "|---|---|"]
    lines += [f"| {n} | {_num(v, '.4f')} |" for n, v in lpips["per_class"].items()]
    lines.append(f"| Average | {_num(lpips['mean'], '.4f')} |")
    return "\n".join(lines)


def summary_row(metrics: dict) -> str:
    """One row: RCA (with its interval), accuracies, FID, KID x1e3, IS, LPIPS, oracle FD."""
    ident, vis = metrics["identity"], metrics.get("visual", {})

    def inner(entry, key):  # a metric dict's number, or the dict itself when it says "skipped"
        return entry.get(key, entry) if isinstance(entry, dict) else entry

    kid = vis.get("kid")
    boot = metrics.get("bootstrap", {})
    cells = [f"{_num(ident['rca'])}{_ci(boot.get('rca'), _dropped(boot))}",
             f"{_num(ident.get('balanced_rca'))}{_ci(boot.get('balanced_rca'), _dropped(boot, key='balanced_rca'))}",
             f"{ident['accuracy_gen']:.4f}",
             f"{ident['accuracy_real']:.4f}", _num(vis.get("fid"), ".2f"),
             _num(kid * 1e3 if isinstance(kid, float) else kid, ".2f"),
             _num(inner(vis.get("inception_score"), "mean")), _num(inner(vis.get("lpips"), "mean"), ".4f"),
             _num(metrics.get("oracle_frechet", {}).get("global"), ".2f")]
    return "| " + " | ".join(cells) + " |"


def nuisance_cell(nuisance: dict | None) -> str:
    """Nuisance-matched RCA, or why there is none (a match that would destroy identity cues)."""
    if not nuisance:
        return "-"
    if nuisance.get("unmatched"):
        return "not measurable (see the nuisance section)"
    return _num(nuisance.get("nuisance_matched_rca"))


def diversity_table(metrics: dict) -> str:
    """Per class: mean pairwise oracle-feature distance on generated and real images, and their ratio."""
    div = metrics.get("feature_diversity")
    if not div:
        return "Not computed (metrics.json from an older kface)."
    lines = ["| Class | Generated | Real test | Generated / real |", "|---|---:|---:|---:|"]
    lines += [f"| {n} | {_num(v['gen'])} | {_num(v['real'])} | {_num(v['ratio'])} |" for n, v in div["per_class"].items()]
    lines.append(f"| Mean | {_num(div['mean_gen'])} | {_num(div['mean_real'])} | {_num(div['ratio'])} |")
    return "\n".join(lines)


def oracle_table(metrics: dict) -> str:
    """Identity metrics with one column per oracle (only when several were given)."""
    oracles = metrics.get("oracles", {})
    if len(oracles) < 2:
        return ""
    rows = [("RCA", lambda m: f"{_num(m['identity']['rca'])}"
                              f"{_ci(m.get('bootstrap', {}).get('rca'), _dropped(m.get('bootstrap')))}"),
            ("Balanced RCA", lambda m: _with_ci(m, "balanced_rca")),
            ("Nuisance-matched RCA", lambda m: nuisance_cell(m.get("nuisance"))),
            ("Accuracy gen", lambda m: f"{m['identity']['accuracy_gen']:.4f}"),
            ("Accuracy real", lambda m: f"{m['identity']['accuracy_real']:.4f}"),
            ("Accuracy gen, nuisance-matched", lambda m: _num(m.get("nuisance", {}).get("accuracy_gen_matched"), ".4f")),
            ("Accuracy real, nuisance-matched", lambda m: _num(m.get("nuisance", {}).get("accuracy_real_matched"),
                                                                ".4f")),
            ("Feature diversity gen / real", lambda m: _num(m.get("feature_diversity", {}).get("ratio"))),
            ("Nuisance share of the gap", lambda m: _num(m.get("nuisance", {}).get("nuisance_share_of_gap"))),
            ("Oracle FD", lambda m: _num(m.get("oracle_frechet", {}).get("global"), ".2f")),
            ("Coverage (global) / real-vs-real", lambda m: _global_prdc(m, "coverage")),
            ("Recall (global) / real-vs-real", lambda m: _global_prdc(m, "recall")),
            ("Copies (share)", lambda m: _num((m.get("memorisation") or {}).get("share"))),
            ("Verdicts", verdict_summary)]
    lines = ["## Oracles side by side", "", "| Metric | " + " | ".join(f"`{n}`" for n in oracles) + " |",
             "|---" * (len(oracles) + 1) + "|"]
    lines += [f"| {label} | " + " | ".join(fmt(m) for m in oracles.values()) + " |" for label, fmt in rows]
    return "\n".join(lines) + "\n\n"


def _global_prdc(m: dict, key: str) -> str:
    g = (m.get("fidelity") or {}).get("global")
    return _prdc_cell(g["generated"], g["real"], key) if g else "-"


def shift_section(metrics: dict) -> str:
    """The low-level shift summary and the oracle-nuisance table (a column pair per oracle)."""
    shift = metrics.get("shift")
    if not shift:
        return "Oracle-nuisance diagnostic skipped (--no_nuisance).\n"
    real, gen, diff = shift["real"], shift["generated"], shift["difference"]

    def vec(v, fmt="+.3f"):
        return ", ".join(format(x, fmt) for x in v) if isinstance(v, list) else format(v, fmt)

    lines = ["| Statistic ([0, 1] units) | Real test | Generated | Generated - real |", "|---|---|---|---|"]
    for key, label in (("channel_mean", "Channel mean (R, G, B)"), ("channel_std", "Channel std"),
                       ("centre_mean", "Centre mean (the colour step's fit)"), ("centre_std", "Centre std"),
                       ("border_mean", f"Border mean (outer {shift['border_px']} px)"), ("border_std", "Border std"),
                       ("hf_energy", "High-frequency energy")):
        if key in real:  # metrics.json files written before the centre statistics existed lack them
            lines.append(f"| {label} | {vec(real[key], '.3f')} | {vec(gen[key], '.3f')} | {vec(diff[key])} |")
    oracles = metrics.get("oracles") or {"oracle": metrics}
    head = "| Real test images | " + " | ".join(f"`{n}` accuracy | drop" for n in oracles) + " |"
    lines += ["", head, "|---" * (2 * len(oracles) + 1) + "|"]
    first = next(iter(oracles.values()))["nuisance"]["accuracy"]
    for key in first:
        label = key if key != "high_frequency" else f"high_frequency ({first[key]['kind']}, " \
                                                     f"sigma {first[key]['sigma']:.3f})"
        cells = []
        for m in oracles.values():
            acc = m["nuisance"]["accuracy"]
            value = acc[key] if key == "clean" else acc[key]["accuracy"]
            cells.append(f"{value:.3f} | {acc['clean'] - value:+.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "| Nuisance-matched sets | " + " | ".join(f"`{n}`" for n in oracles) + " |",
              "|---" * (len(oracles) + 1) + "|"]
    for label, key in (("Accuracy gen (colour and background mapped to real)", "accuracy_gen_matched"),
                       ("Accuracy real (given the generated grain/blur)", "accuracy_real_matched")):
        lines.append(f"| {label} | " + " | ".join(_num(m["nuisance"].get(key)) for m in oracles.values()) + " |")
    lines.append("| **Nuisance-matched RCA** | " + " | ".join(nuisance_cell(m["nuisance"]) for m in oracles.values())
                 + " |")
    lines.append("")
    lines += [f"- `{n}`: {m['nuisance']['explanation']}" for n, m in oracles.items()]
    return "\n".join(lines) + "\n"


def frechet_table(metrics: dict) -> str:
    """Per class and global: the Fréchet distance in the oracle's feature space, or why it is unavailable."""
    fd = metrics.get("oracle_frechet", {})
    fd_rows = "\n".join(f"| {n} | {_num(v, '.2f')}"
                        f"{' (unavailable: ' + fd['unavailable'][n] + ')' if n in fd.get('unavailable', {}) else ''} |"
                        for n, v in fd.get("per_class", {}).items())
    unavailable = f" (unavailable: {fd['global_unavailable']})" if fd.get("global_unavailable") else ""
    return "\n".join(["| Class | Oracle FD |", "|---|---|", fd_rows,
                      f"| Global | {_num(fd.get('global'), '.2f')}{unavailable} |"])


def _prdc_cell(gen: dict | None, real: dict | None, key: str) -> str:
    """``generated [lo, hi] / real-vs-real``, or why there is no number."""
    if not gen or "unavailable" in gen:
        return "n/a"
    iv = (gen.get("interval") or {}).get(key)
    real_v = None if not real or "unavailable" in real else real.get(key)
    return f"{gen[key]:.2f}" + (f" [{iv[0]:.2f}, {iv[1]:.2f}]" if iv else "") + f" / {_num(real_v, '.2f')}"


def fidelity_table(fid: dict | None) -> str:
    """Per class and global: precision, recall, density, coverage of the generated images, each beside the
    real-vs-real value (the ceiling)."""
    if not fid:
        return "Not computed (--no_fidelity, or metrics.json from an older kface)."
    if "skipped" in fid:
        return f"Skipped: {fid['skipped']}"
    lines = ["| Class | Precision | Recall | Density | Coverage | Images (gen / real test / train) |",
             "|---|---|---|---|---|---|"]
    rows = list(fid["per_class"].items()) + [("**Global**", fid["global"])]
    for name, row in rows:
        gen, real = row["generated"], row["real"]
        counts = f"{gen.get('num_gen', '-')} / {real.get('num_gen', '-')} / {gen.get('num_real', '-')}"
        why = f" ({gen['unavailable']})" if "unavailable" in gen else ""
        lines.append(f"| {name} | " + " | ".join(_prdc_cell(gen, real, k) for k in ("precision", "recall", "density",
                                                                                  "coverage")) + f" | {counts}{why} |")
    return "\n".join(lines)


def memorisation_table(metrics: dict) -> str:
    """Per class: the share of generated images that are copies, the same rule's share of real test images,
    and the median nearest-training-image distance of both sets in the oracle's features and in pixels."""
    memo = metrics.get("memorisation")
    if not memo:
        return "Not computed (--no_fidelity, or metrics.json from an older kface)."
    if "skipped" in memo:
        return f"Skipped: {memo['skipped']}"
    lines = ["| Class | Copies (share) | Real test images under the same rule | Median distance to nearest train, "
             "oracle: gen / real | pixels (RMS): gen / real |", "|---|---|---:|---|---|"]
    for name, r in memo["per_class"].items():
        lines.append(f"| {name} | {r['copies']} of {r['num_gen']} ({r['share']:.2f}) | {_num(r['share_real'], '.2f')} "
                     "| "
                     f"{r['median_oracle']['generated']:.3f} / {_num(r['median_oracle']['real'])} | "
                     f"{r['median_pixels']['generated']:.3f} / {_num(r['median_pixels']['real'])} |")
    lines.append(f"| **Global** | {memo['copies']} ({memo['share']:.2f}) | {memo['share_real']:.2f} | | |")
    t = memo["thresholds"]
    lines += ["", f"Rule: {memo['definition']} (thresholds, the {memo['percentile']:g}th percentile of the real test "
                  f"images' distances: oracle {t['oracle']:.3f}, pixels {t['pixels']:.4f})."]
    return "\n".join(lines)


def thresholds_text(thresholds: dict) -> str:
    t = thresholds
    return (f"*copied*: copies >= {t['copied_share']} of the class's images; else *lost*: class RCA < {t['lost_rca']} "
            f"or precision < {t['lost_precision_ratio']} x real-vs-real; else *caricatured*: coverage or recall < "
            f"{t['caricature_ratio']} x real-vs-real; else *kept*.")


def verdict_table(metrics: dict) -> str:
    """Per class: the verdict, the numbers it rests on, and why; the thresholds under it."""
    ver = metrics.get("verdicts")
    if not ver:
        return "Not computed (--no_fidelity, or metrics.json from an older kface)."
    lines = ["| Class | Verdict | Class RCA | Coverage / real | Recall / real | Precision / real | Copies | Why |",
             "|---|---|---:|---:|---:|---:|---:|---|"]
    for name, v in ver["per_class"].items():
        lines.append(f"| {name} | **{v['verdict']}** | {_num(v['class_rca'], '.2f')} "
                     f"| {_num(v['coverage_ratio'], '.2f')} "
                     f"| {_num(v['recall_ratio'], '.2f')} | {_num(v['precision_ratio'], '.2f')} "
                     f"| {_num(v['copy_share'], '.2f')} | {v['why']} |")
    counts = ", ".join(f"{n} {k}" for k, n in ver["counts"].items() if n)
    lines += ["", f"{counts}. Thresholds: {thresholds_text(ver['thresholds'])}"]
    return "\n".join(lines)


def verdict_summary(m: dict) -> str:
    """``kept 6, caricatured 2, lost 2`` of one oracle's metrics, or ``-``."""
    ver = m.get("verdicts")
    return ", ".join(f"{k} {n}" for k, n in ver["counts"].items() if n) if ver else "-"
