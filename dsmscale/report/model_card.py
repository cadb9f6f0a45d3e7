"""Model cards: what a shipped model is, what it was trained on and how, and how well it does.

Written beside each shipped checkpoint (``dsmscale/weights/*.md``) by ``jobs/ship_model.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

from dsmscale.checkpoints import model_grid

#: What each ``monitor`` of `dsmscale.training.TrainConfig` follows, in words.
MONITOR_TEXT = {"val_loss": "lowest validation loss",
                "val_score": "highest mean of validation object accuracy and mIoU"}


def model_card(name: str, target: Path, ckpt: dict, metrics: dict[str, dict], data_info: dict,
               command: str, commit: str, training: dict | None = None,
               held_out: dict[str, dict] | None = None, held_out_source: str = "") -> str:
    """The card of checkpoint ``ckpt`` shipped as ``target`` under ``name``: its classes,
    training data (``data_info``, the simulator's summary.json), input, config, how long it
    trained on what (``training``: ``epochs``, ``wall_s``, ``precision``, ``threads``,
    ``machine``), provenance, test ``metrics`` per dataset (with its ``snr`` where known) and
    scores on tomograms it never saw
    (``held_out``: set → n, obj_acc, miou; from ``held_out_source``)."""
    cfg = ckpt["config"]
    box, voxel_a = model_grid(ckpt)
    distilled = _distillation(cfg, ckpt.get("teacher_run_hash")) + _fine_tuning(ckpt)
    rows = "\n".join(
        f"| {_test_set(dataset, m)} | "
        f"{m['n']} | {_pct(m['obj_acc'])} | {_pct(m['pix_acc'])} | {_pct(m['miou'])} | "
        f"{m['fsc_resolution_nm']:.1f} |" for dataset, m in metrics.items())
    return f"""# Model card: `{target.name}` ({name})

DSM-Net ({ckpt['model']}: heads {', '.join(ckpt['heads'])}), {sum(v.numel() for v in
ckpt['state_dict'].values()):,} parameters and buffers, {target.stat().st_size / 1e6:.1f} MB.

- **Classes ({ckpt['n_classes']}):** {', '.join(ckpt['classes'])}
- **Training data:** `{cfg['dataset']}` — {_training_data(cfg, data_info)}
- **Input:** {box}³ boxes at {voxel_a / 10:g} nm/voxel, normalised per box (zero mean, unit
  variance); recovered
  density in Da/voxel (× {ckpt['normalisation']['density_scale']:g}).
- **Config:** model {cfg['model']}, loss cls:seg:rec {cfg['loss_weights']}, Adam lr {cfg['lr']}
  betas {cfg['betas']}, batch {cfg['batch_size']}{_micro(cfg)}{_augment(cfg)}{_batch_norm(cfg)},
  {cfg['max_epochs']} epochs {cfg['schedule']},
  seed {cfg['seed']}; best epoch ({MONITOR_TEXT[cfg.get('monitor', 'val_loss')]})
  {ckpt['epoch'] + 1} of {cfg['max_epochs']}.
{distilled}{_training_time(training)}- **Command:** `{command}` at commit `{commit}`; run hash
  `{ckpt['run_hash']}`.

## Test-split metrics (this checkpoint, `dsmscale evaluate`)

| dataset | n | object acc | pixel acc | mIoU | FSC 0.5 (nm) |
|---|---|---|---|---|---|
{rows}
{_held_out(held_out, held_out_source)}
Limits: trained on simulation only; on real tomograms expect a domain gap (use it to
bootstrap, then fine-tune on labelled real data).
"""


def _training_time(training: dict | None) -> str:
    """The card's line on how long the run trained, in what precision, on what machine."""
    if not training:
        return ""
    return (f"- **Training:** {training['epochs']} epochs in {training['wall_s'] / 60:.0f} min, "
            f"{training['precision']} on {training['threads']} thread{'s' * (training['threads'] != 1)} of "
            f"{training['machine']}.\n")


def _held_out(held_out: dict[str, dict] | None, source: str) -> str:
    """The card's table of scores on tomograms the model never saw."""
    if not held_out:
        return ""
    rows = "\n".join(f"| {label} | {s['n']} | {_pct(s.get('obj_acc'))} | {_pct(s.get('miou'))} |"
                     for label, s in held_out.items())
    return f"""
## On tomograms it never saw ({source})

| set | boxes | object acc | mIoU |
|---|---|---|---|
{rows}
"""


def _micro(cfg: dict) -> str:
    """' in micro-batches of N' when the run split its batches (see TrainConfig.micro_batch)."""
    micro = cfg.get("micro_batch")
    return f" in micro-batches of {micro}" if micro and micro < cfg["batch_size"] else ""


def _batch_norm(cfg: dict) -> str:
    """The config line's clause for a network without batch normalisation (TrainConfig.batch_norm)."""
    return ", without batch normalisation (the plain reading)" if cfg.get("batch_norm") is False else ""


def _augment(cfg: dict) -> str:
    """The augmentation clause of the config line (see TrainConfig.augment)."""
    return (", each box rotated by a random one of the 180° turns about z, y, x that keep the "
            "missing wedge" if cfg.get("augment") else "")


def _test_set(dataset: str, metrics: dict) -> str:
    """A test-table row's name: the dataset, and the SNR its tomogram was simulated at."""
    snr = metrics.get("snr")
    return dataset if snr is None else f"{dataset} (SNR {snr:.3f})"


def _training_data(cfg: dict, data_info: dict) -> str:
    """How the training dataset was simulated, from the simulator's summary.json (or a
    randomised set's config and drawn conditions)."""
    if "randomised" in data_info:
        return _randomised_data(data_info["randomised"], data_info["conditions"])
    sim = data_info.get("config")
    if not sim:
        return "(no summary.json beside the datasets: simulation settings unknown)"
    tomo, name = sim["tomogram"], Path(cfg["dataset"]).name
    shape = "×".join(str(round(n * tomo["voxel_size_a"] / 10)) for n in tomo["shape_zyx"][::-1])
    return (f"simulated by `dsmscale simulate` ({sim['n_tomograms']} crowded {shape} nm "
            f"tomogram(s) at {tomo['voxel_size_a'] / 10:g} nm, tilt {_tilts(tomo)} / "
            f"{tomo['tilt_step_deg']:g}°, CTF {tomo['voltage_kv']:g} kV Cs {tomo['cs_mm']:g} mm "
            f"{tomo['defocus_um']:g} ± {tomo['defocus_jitter_um']:g} µm underfocus, MTF, WBP) at "
            f"**SNR {data_info['snr_measured'][name]:.3f} only (dataset {name})**; train split "
            f"{sim['split_fractions'][0]:.0%}.")


def _randomised_data(config: dict, conditions: list[dict]) -> str:
    """The card's line for a `dsmscale simulate-randomised` set: the ranges and what was drawn."""
    r = config["ranges"]

    def span(key: str, unit: str = "", fmt: str = "g") -> str:
        drawn = [c[key] for c in conditions]
        return (f"{r[key][0]:{fmt}}–{r[key][1]:{fmt}}{unit} (drawn {min(drawn):{fmt}}–"
                f"{max(drawn):{fmt}})")

    asymmetric = sum(not math.isclose(-c["tilt_min_deg"], c["tilt_max_deg"]) for c in conditions)
    return (f"simulated by `dsmscale simulate-randomised` (seed {config['seed']}): "
            f"{len(conditions)} tomograms of {config['lateral_nm']:g} nm across, each under its "
            f"own conditions drawn from SNR {span('snr', fmt='.3g')} (log-uniform), defocus "
            f"{span('defocus_um', ' µm', '.2g')}, Cs {' or '.join(f'{c:g}' for c in r['cs_mm'])} "
            f"mm, tilt limits {r['tilt_limit_deg'][0]:g}–{r['tilt_limit_deg'][1]:g}° "
            f"({asymmetric} asymmetric) in steps of "
            f"{' / '.join(f'{c:g}' for c in r['tilt_step_deg'])}°, thickness "
            f"{span('thickness_nm', ' nm', '.0f')}, voxel size {span('voxel_size_a', ' Å', '.3g')}"
            f" (resampled to the model's grid), volume fraction "
            f"{span('volume_fraction', fmt='.2f')}; whole tomograms split "
            f"{config['split_fractions'][0]:.0%} train.")


def _tilts(tomo: dict) -> str:
    """'±60°', or '−50°/+70°' for an asymmetric range (TomogramConfig.tilt_min_deg)."""
    low = tomo.get("tilt_min_deg")
    if low is None:
        return f"±{tomo['tilt_max_deg']:g}°"
    return f"{low:g}°/+{tomo['tilt_max_deg']:g}°"


def _distillation(cfg: dict, teacher_run: str | None) -> str:
    """The model card's distillation line (empty for a model trained on labels alone)."""
    if not cfg.get("teacher"):
        return ""
    loss = cfg["distill_loss"] + (f" at T = {cfg['temperature']:g}" if cfg["distill_loss"] == "kl"
                                  else "")
    run = f" (run `{teacher_run}`)" if teacher_run else ""
    when = " as shipped when the student was trained" if cfg["teacher"] == "default" else ""
    return (f"- **Distilled from:** `{cfg['teacher']}`{when}{run} — "
            f"classification {loss}, soft segmentation and recovery; "
            f"{cfg['hard_weight']:g} of the loss from the true targets.\n")


def _fine_tuning(ckpt: dict) -> str:
    """The model card's fine-tuning line (empty for a model trained from scratch)."""
    start = ckpt.get("fine_tuned_from")
    if not start:
        return ""
    kept = ", ".join(start["classes_kept"]) or "none"
    frozen = ckpt["config"].get("freeze_encoder_epochs", 0)
    return (f"- **Fine-tuned from:** `{start['name']}` (`{start['checkpoint']}`, run "
            f"`{start['run_hash']}`); classifier rows kept for: {kept}"
            f"{f'; encoder frozen for the first {frozen} epochs' if frozen else ''}.\n")


def _pct(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


