# Over 450 lines on purpose: one job (findings -> the next step); recommend is the seed's ladder read top to bottom, and its rungs' helpers share one context (_Ctx).
"""Findings -> the next step: the seed's recommendation ladder, with reasons, evidence and commands.

The ladder (thresholds in ``[recommend]`` of the rules file):

1. Nothing to judge (``no_scalars``) or KL/reconstruction not logged -> ``check_logging``.
2. Non-finite losses -> ``stop_training`` (restart from the last finite checkpoint).
3. Posterior collapse -> ``reduce_kl_weight`` by default: the penalty pushes q(z|x) onto the prior, and
   the literature's remedies (KL annealing, Bowman et al. 2016; free bits, Kingma et al. 2016) lower the
   weight. ``[recommend] on_collapse = "increase_kl_weight"`` selects the opposite action for users who
   steer the KL to a set point from below.
4. KL over the target band at/after epoch 10 (``kl_too_high``), or a penalty that takes a real share of
   the reconstruction signal while the run is blurry or misses its PSNR/perceptual targets ->
   ``reduce_kl_weight`` (divide by ``kl_reduce_factor``, 10, or its smallest power that brings the penalty
   under ``[penalty] warn_ratio`` of the reconstruction loss, up to ``max_reduce_factor``), unless the weight is already at or below
   ``tiny_kl_weight``, where it changes nothing -> ``switch_to_autoencoder`` (the seed's Option B).
5. Still blurry after ``blurry_after`` epochs with a negligible penalty -> ``switch_to_autoencoder``.
6. An autoencoder still blurry after ``blurry_after`` epochs -> ``increase_latent_dim`` (x2, at most 2048).
7. Converged, learning rate vanished or val reconstruction diverging -> ``stop_training``.
8. Otherwise ``continue``.

``reduce_kl_weight`` carries the seed's plan arithmetic in ``params["plan"]``: the total weight of the
reconstruction terms, the regularisation the new weight gives at the expected KL (``[kl] expected``), and
their ratio (the seed: 1.0 + 1.2 + 0.5 + 0.1 = 2.8x against 0.0000001 x ~300 = 0.00003, 93,000:1). Outside
the seed's profile the plan is the run's own: its current KL, and its reconstruction loss against the new
penalty (the ratio its ``penalty_share`` finding states, times the cut). When the run is blurry and was made
by vaediag's trainer with lighter reconstruction weights than the seed's recipe (``[recommend.recipe]``), the
recipe's weights come with it, as the seed's fix did.

Commands: for runs made by vaediag's trainer (a ``config.json`` in the run directory), the exact next
command: ``python -m train --config RUN/config.json`` plus the changed flags (the trainer starts from the
saved config and overrides only the flags given). Other runs get the values in ``params`` and a reason
that names the config key to edit.
"""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from vaediag.diagnose.model import Finding, Recommendation
from vaediag.diagnose.profiles import is_our_run
from vaediag.diagnose.numbers import (
    reduce_factor,
    fmt_pct,
    fmt_kl,
    fmt_loss_weight,
    fmt_ratio,
    fmt_sig,
    fmt_weight,
    human_epoch,
    round_sig,
)
from vaediag.diagnose.penalty import (
    KL_WEIGHT_PARAMS,
    LATENT_DIM_PARAMS,
    find_param,
    penalty_phrase,
)

if TYPE_CHECKING:  # pragma: no cover
    from vaediag.diagnose.model import RunDiagnosis
    from vaediag.diagnose.rulesfile import Rules

__all__ = ["TRAIN_COMMAND", "recommend", "next_command", "plan_arithmetic", "is_our_run"]

TRAIN_COMMAND = "python -m train"
# Reconstruction weights in the order the seed adds them up (L1, perceptual, SSIM, edge).
_RECIPE_ORDER = ("w_l1", "w_perceptual", "w_ssim", "w_edge")
_RECIPE_NAMES = {"w_l1": "L1", "w_perceptual": "perceptual", "w_ssim": "SSIM", "w_edge": "edge"}


def _flag_value(v: Any) -> str:
    if isinstance(v, float):
        return repr(v)
    return str(v)


def next_command(config_path: str | Path, changes: Mapping[str, Any], *, config: Mapping[str, Any] | None = None) -> str:
    """``python -m train --config CONFIG`` plus one flag per changed field (``kl_weight`` -> ``--kl-weight``).

    A run that was itself resumed saved ``resume``; the next run starts fresh, so ``--resume ''`` is added.

    >>> next_command("logs/ear_teacher/ear_vae/version_1/config.json", {"kl_weight": 1e-06})
    'python -m train --config logs/ear_teacher/ear_vae/version_1/config.json --kl-weight 1e-06'
    """
    argv = [TRAIN_COMMAND, "--config", shlex.quote(str(config_path))]
    for key, value in changes.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + key.replace("_", "-"))
        else:
            argv += [flag, shlex.quote(_flag_value(value))]
    if config and config.get("resume"):
        argv += ["--resume", "''"]
    return " ".join(argv)


def plan_arithmetic(weights: Mapping[str, float] | None, kl_weight: float, expected_kl: float, *,
                    approx: bool = True) -> tuple[list[str], float]:
    """The seed's plan lines for a new kl_weight and the reconstruction-to-regularisation ratio.

    >>> lines, ratio = plan_arithmetic({"w_l1": 1.0, "w_perceptual": 1.2, "w_ssim": 0.5, "w_edge": 0.1}, 1e-7, 300)
    >>> lines
    ['Total reconstruction 1.0 + 1.2 + 0.5 + 0.1 = 2.8x', 'Regularisation 0.0000001 × ~300 = 0.00003', 'Ratio 93,000:1 reconstruction vs regularisation']
    """
    ws = [float(weights[k]) for k in _RECIPE_ORDER if weights and k in weights] if weights else []
    if not ws:
        ws = [1.0]
        total_line = "Total reconstruction 1.0 = 1.0x (reconstruction loss alone; other weights unknown)"
    else:
        total_line = f"Total reconstruction {' + '.join(fmt_loss_weight(w) for w in ws)} = {fmt_loss_weight(round(sum(ws), 6))}x"
    total = sum(ws)
    reg = kl_weight * expected_kl
    ratio = total / reg if reg > 0 else math.inf
    return [
        total_line,
        f"Regularisation {fmt_weight(kl_weight)} × {'~' if approx else ''}{fmt_kl(expected_kl)} = "
        f"{fmt_sig(reg, 2) if reg else '0'}",
        f"Ratio {fmt_ratio(ratio)} reconstruction vs regularisation",
    ], ratio


class _Ctx:
    """What the ladder needs from a diagnosis, computed once."""

    def __init__(self, d: "RunDiagnosis", rules: "Rules", config: Mapping[str, Any] | None,
                 params: Mapping[str, Any] | None, config_path: Path | None) -> None:
        self.d = d
        self.rules = rules
        self.rec = rules.section("recommend")
        self.config = dict(config or {})
        self.params = dict(params or {})
        self.ours = is_our_run(self.config) and config_path is not None
        self.config_path = config_path
        self.by_rule: dict[str, list[Finding]] = {}
        for f in d.findings:
            self.by_rule.setdefault(f.rule, []).append(f)
        self.ae = d.model == "ae"
        self.has_kl = d.has_kl
        self.w = d.penalty.kl_weight

    def first(self, rule: str, *severities: str) -> Finding | None:
        for f in self.by_rule.get(rule, []):
            if not severities or f.severity in severities:
                return f
        return None

    def checklist_fails(self, term: str) -> list[Finding]:
        return [f for f in self.d.findings if f.is_checklist and f.term == term and f.status == "fail"]

    def command(self, changes: Mapping[str, Any]) -> str | None:
        if not self.ours or self.config_path is None:
            return None
        return next_command(self.config_path, changes, config=self.config)


def _quality(ctx: _Ctx) -> tuple[list[str], list[str]]:
    """(reasons the run is not sharp enough, evidence ids)."""
    reasons, evidence = [], []
    b = ctx.first("blurry", "warn")
    if b is not None:
        reasons.append(f"sharpness ratio {fmt_sig(b.value, 2)} < {fmt_sig(b.threshold, 2)}")
        evidence.append(b.id)
    for term, unit in (("psnr", " dB"), ("perceptual", "")):
        fails = ctx.checklist_fails(term)
        if fails:
            f = fails[-1]
            target = f.threshold if not isinstance(f.threshold, tuple) else f.threshold[0]
            op = ">" if term == "psnr" else "<"
            val = f"{f.value:.1f}" if term == "psnr" else fmt_sig(f.value, 3)
            reasons.append(f"{'PSNR' if term == 'psnr' else 'perceptual'} {val}{unit} (target {op} "
                           f"{fmt_sig(target, 3)}{unit}, {f.rule.replace('_', ' ')})")
            evidence.append(f.id)
    return reasons, evidence


def _recipe_changes(ctx: _Ctx, blurry: bool) -> dict[str, float]:
    """The seed's reconstruction weights where the run (ours, blurry) used lighter ones."""
    if not (ctx.ours and blurry):
        return {}
    recipe = ctx.rules.get("recommend.recipe")
    out = {}
    for key in _RECIPE_ORDER:
        if key in recipe and key in ctx.config:
            cur = ctx.config[key]
            if isinstance(cur, (int, float)) and not isinstance(cur, bool) and float(cur) < float(recipe[key]):
                out[key] = float(recipe[key])
    return out


def _current_weights(ctx: _Ctx) -> dict[str, float] | None:
    if ctx.config:
        ws = {k: float(ctx.config[k]) for k in _RECIPE_ORDER if isinstance(ctx.config.get(k), (int, float))}
        if ws:
            return ws
    # Foreign runs: the weights in their params where named like ours.
    ws = {}
    for key in _RECIPE_ORDER:
        hit = find_param(ctx.params, key)
        if hit is not None and isinstance(hit[1], (int, float)):
            ws[key] = float(hit[1])
    return ws or None


def _reduce_factor(ctx: _Ctx) -> tuple[float, str]:
    """How far to cut (:func:`~vaediag.diagnose.numbers.reduce_factor`) and the words that say why."""
    step = float(ctx.rec["kl_reduce_factor"])
    warn = float(ctx.rules.section("penalty")["warn_ratio"])
    ratio = (ctx.d.penalty.latest or {}).get("ratio")
    factor = reduce_factor(ratio, step=step, warn_ratio=warn, cap=float(ctx.rec["max_reduce_factor"]))
    if factor == step:
        return factor, ""
    return factor, (f" (the smallest power of {step:g} that brings the penalty from {fmt_pct(ratio)} to at most "
                    f"{fmt_pct(warn)} of the reconstruction loss at the current KL)")


def _reduce(ctx: _Ctx, why: str, evidence: list[str], *, blurry: bool) -> Recommendation:
    factor, factor_why = _reduce_factor(ctx)
    w = ctx.w
    params: dict[str, Any] = {"factor": factor, "from": w}
    if w is None:
        params["kl_weight"] = None
        reason = (f"{why}: reduce kl_weight {factor:g}x (its current value is unknown: pass --kl-weight W, or "
                  "log it, to get the new value)")
        return Recommendation("reduce_kl_weight", reason, params=params, evidence=tuple(evidence))
    new = round_sig(w / factor, 6)
    params["kl_weight"] = new
    recipe = _recipe_changes(ctx, blurry)
    weights = _current_weights(ctx)
    if recipe:
        weights = {**(weights or {}), **recipe}
        params["loss_weights"] = dict(weights)
    # The seed's profile plans at the seed's expected KL (its "~300"); any other run at its own current KL.
    own_kl = (ctx.d.penalty.latest or {}).get("kl")
    if ctx.d.profile == "seed" or own_kl is None or not math.isfinite(own_kl):
        expected = float(ctx.rules.section("kl")["expected"])
        plan, ratio = plan_arithmetic(weights, new, expected)
    else:
        expected = float(own_kl)
        plan, ratio = plan_arithmetic(weights, new, expected, approx=False)
        plan[1] += " (at the run's current KL; a lower weight lets it rise)"
        # The seed's ratio is a sum of loss weights over the penalty, which means something only at the seed's
        # loss scale; any other run gets its own reconstruction signal over the new penalty, the ratio its
        # penalty finding states ("reconstruction : regularisation").
        signal = (ctx.d.penalty.latest or {}).get("recon_signal")
        reg = new * expected
        if not recipe and signal is not None and math.isfinite(signal) and signal > 0 and reg > 0:
            ratio = signal / reg
            plan[0] = f"Reconstruction {fmt_sig(signal, 3)} (the run's current reconstruction loss)"
            plan[2] = f"Ratio {fmt_ratio(ratio)} reconstruction vs regularisation"
    params["plan"] = plan
    params["expected_kl"] = expected
    params["recon_to_reg"] = ratio
    reason = f"{why}: cut kl_weight {factor:g}x, {fmt_weight(w)} → {fmt_weight(new)}{factor_why}"
    source = ctx.d.penalty.kl_weight_source or ""
    if source.startswith("inferred"):
        reason += " (the current weight is inferred from the train total: loss = recon + w × KL)"
    if recipe:
        moves = ", ".join(
            f"{_RECIPE_NAMES[k]} {fmt_loss_weight(float(ctx.config[k]))} → {fmt_loss_weight(v)}" for k, v in recipe.items()
        )
        reason += f", and re-weight the reconstruction terms as the seed did ({moves})"
    changes: dict[str, Any] = {"kl_weight": new, **recipe}
    command = ctx.command(changes)
    if command is None:
        hit = find_param(ctx.params, *KL_WEIGHT_PARAMS)
        if hit is not None:
            reason += f" (set {hit[0]} = {fmt_weight(new)} in the run's config)"
    return Recommendation("reduce_kl_weight", reason, params=params, evidence=tuple(evidence), command=command)


def _switch(ctx: _Ctx, why: str, evidence: list[str]) -> Recommendation:
    reason = (f"{why}: train as a plain autoencoder (the seed's Option B: z = mu, KL weight 0); "
              "the latent space loses its VAE properties, reconstructions get the whole signal")
    return Recommendation("switch_to_autoencoder", reason, params={"mode": "ae", "kl_weight": 0.0},
                          evidence=tuple(evidence), command=ctx.command({"ae": True, "kl_weight": 0.0}))


def _latent(ctx: _Ctx, why: str, evidence: list[str]) -> Recommendation | None:
    factor = int(ctx.rec["latent_factor"])
    cap = int(ctx.rec["max_latent_dim"])
    latent = ctx.d.penalty.latent_dim
    if latent is None:
        return Recommendation("increase_latent_dim",
                              f"{why}: an autoencoder still blurry needs a wider bottleneck: multiply the latent "
                              f"size by {factor} (at most {cap}; the current size is unknown)",
                              params={"factor": factor, "latent_dim": None, "max": cap}, evidence=tuple(evidence))
    if latent >= cap:
        return None
    new = min(latent * factor, cap)
    reason = f"{why}: an autoencoder still blurry needs a wider bottleneck: latent_dim {latent} → {new}"
    command = ctx.command({"ae": True, "latent_dim": new})
    if command is None:
        hit = find_param(ctx.params, *LATENT_DIM_PARAMS)
        if hit is not None:
            reason += f" (set {hit[0]} = {new} in the run's config)"
    return Recommendation("increase_latent_dim", reason, params={"latent_dim": new, "from": latent, "factor": factor,
                                                                 "max": cap}, evidence=tuple(evidence), command=command)


def _missing_terms(ctx: _Ctx) -> Recommendation | None:
    f = ctx.first("missing_terms")
    if f is None:
        return None
    return Recommendation("check_logging", f"{f.message}: the penalty, collapse and checklist rules need them "
                          "(the tags vaediag reads are in vaediag.terms)",
                          params={"missing": (f.key or "").split(",") if f.key else []}, evidence=(f.id,))


def recommend(
    diagnosis: "RunDiagnosis",
    *,
    rules: "Rules",
    config: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
    config_path: str | Path | None = None,
) -> list[Recommendation]:
    """The ladder's next steps for one diagnosed run, most urgent first (the module docstring's order).

    Args:
        diagnosis: the run's findings, penalty and epoch table.
        rules: thresholds (``[recommend]``, ``[kl]``).
        config: the run's config.json (default: ``diagnosis.info.config``).
        params: the run's flattened parameters (default: ``diagnosis.info.params``).
        config_path: where the config.json lives, for the command (default: beside the run's event files).
    """
    ctx = _context(diagnosis, rules, config, params, config_path)
    out: list[Recommendation] = []

    dead = ctx.first("no_scalars")
    if dead is not None:
        return [Recommendation("check_logging", f"{dead.message}: check that the training script writes scalars "
                               "to this directory (SummaryWriter.add_scalar / self.log) and that it got past its "
                               "first step", evidence=(dead.id,))]
    missing = _missing_terms(ctx)
    if missing is not None:
        out.append(missing)

    dead_model = ctx.first("dead_model", "fail")
    collapse = ctx.first("kl_collapse", "fail")
    broken = _broken_model(ctx, dead_model, collapse) or _nonfinite(ctx)
    if broken is not None:  # no KL weight helps: the model or its numbers come first
        out.append(broken)
        return out

    quality_reasons, quality_evidence = _quality(ctx)
    blurry = bool(quality_reasons)
    if collapse is not None and not ctx.ae:
        out.append(_on_collapse(ctx, collapse, dead_model, blurry=blurry))
    weight_step = _on_penalty_or_blur(ctx, collapse, quality_reasons, quality_evidence)
    if weight_step is not None:
        out.append(weight_step)

    regress = [f for f in ctx.by_rule.get("trend", []) if f.severity in ("warn", "fail") and f.term == "recon"]
    # Val worse while train still improves is overfitting (val_recon_divergence: stop, keep the best); train
    # getting worse too is instability, which a lower learning rate treats.
    train_ok = any(f.key == "train_recon" and f.severity not in ("warn", "fail") for f in ctx.by_rule.get("trend", []))
    if regress and not train_ok:
        out.append(_lower_lr(ctx, regress))
        return out  # a regressing run is not finished: no stop, no "converged"

    stop = _stop(ctx, regress, after_change=bool(out))
    if stop is not None:
        out.append(stop)
    if not out:
        out.append(_continue(ctx))
    return out


def _context(diagnosis: "RunDiagnosis", rules: "Rules", config: Mapping[str, Any] | None,
             params: Mapping[str, Any] | None, config_path: str | Path | None) -> _Ctx:
    """The ladder's context, each of config, params and config path defaulting to the run's metadata."""
    info = diagnosis.info
    if config is None and info is not None:
        config = info.config
    if params is None and info is not None:
        params = info.params
    if config_path is None and info is not None and config:
        config_path = Path(info.path) / "config.json"
    return _Ctx(diagnosis, rules, config, params, Path(config_path) if config_path is not None else None)


def _broken_model(ctx: _Ctx, dead_model: Finding | None, collapse: Finding | None) -> Recommendation | None:
    """A model whose output ignores its input, unless a posterior collapse under the KL penalty explains it.

    A posterior that collapsed under a KL penalty explains a dead output: the decoder gets nothing from z. The
    KL weight is then the fix (the collapse step, with the dead model as evidence), not the model.
    """
    collapsed_by_penalty = collapse is not None and not ctx.ae and bool(ctx.w)
    if dead_model is None or collapsed_by_penalty:
        return None
    return Recommendation(
        "fix_model", f"{dead_model.message}: no KL weight fixes a model whose output ignores its input; check the "
        "architecture (a bottleneck the decoder can bypass or a too-narrow one), the learning rate and that "
        "training steps were taken, then look at the reconstruction grid", evidence=(dead_model.id,))


def _nonfinite(ctx: _Ctx) -> Recommendation | None:
    """A loss or metric that went NaN or infinite: stop, it will not recover."""
    bad = ctx.by_rule.get("nonfinite", [])
    if not bad:
        return None
    return Recommendation("stop_training", f"{bad[0].message}; it will not recover",
                          params={"why": "nonfinite"}, evidence=tuple(f.id for f in bad))


def _on_collapse(ctx: _Ctx, collapse: Finding, dead_model: Finding | None, *, blurry: bool) -> Recommendation:
    """A collapsed posterior under a KL penalty: raise the weight (``on_collapse = increase_kl_weight``) or cut it."""
    if ctx.rec.get("on_collapse", "reduce_kl_weight") == "increase_kl_weight" and ctx.w:
        factor = float(ctx.rec["kl_increase_factor"])
        new = round_sig(ctx.w * factor, 6)
        return Recommendation(
            "increase_kl_weight", f"{collapse.message}: raise kl_weight {factor:g}x, {fmt_weight(ctx.w)} → "
            f"{fmt_weight(new)}", params={"kl_weight": new, "from": ctx.w, "factor": factor},
            evidence=(collapse.id,) + ((dead_model.id,) if dead_model is not None else ()),
            command=ctx.command({"kl_weight": new}))
    dead_why = ("; the output ignores the input because the decoder gets no information through the "
                "collapsed latent" if dead_model is not None else "")
    return _reduce(ctx, f"{collapse.message} (the KL penalty pushes the posterior onto the prior; "
                   f"annealing the weight from 0 helps too){dead_why}",
                   [collapse.id] + ([dead_model.id] if dead_model is not None else []), blurry=blurry)


def _on_penalty_or_blur(ctx: _Ctx, collapse: Finding | None, quality_reasons: list[str],
                        quality_evidence: list[str]) -> Recommendation | None:
    """A KL over its band or a heavy penalty share (cut the weight, or switch once it is tiny); a run still not
    sharp late (switch the recipe; an autoencoder: a wider latent)."""
    d = ctx.d
    blurry = bool(quality_reasons)
    late = d.epochs >= int(ctx.rec["blurry_after"])
    tiny = ctx.w is not None and ctx.w <= float(ctx.rec["tiny_kl_weight"])
    too_high = ctx.first("kl_too_high", "fail")
    penalty_share_finding = ctx.first("penalty_share", "warn", "fail")
    if not ctx.ae and collapse is None:
        # A penalty share over the fail line is the seed's root cause of blur even where the logs cannot
        # show the blur (no sharpness or PSNR logged); over the warn line it needs the blur to be seen.
        penalty_share_fails = penalty_share_finding is not None and penalty_share_finding.severity == "fail"
        if too_high is not None or penalty_share_fails or (penalty_share_finding is not None and blurry):
            why_parts, evidence = [], []
            if too_high is not None:
                why_parts.append(too_high.message)
                evidence.append(too_high.id)
            if penalty_share_finding is not None:
                why_parts.append(f"the {penalty_phrase(d.penalty.latest)}")
                evidence.append(penalty_share_finding.id)
            if blurry and too_high is None:
                why_parts.append("and the run is not sharp: " + ", ".join(quality_reasons))
                evidence += quality_evidence
            why = "; ".join(why_parts)
            if tiny:
                return _switch(ctx, f"{why}; kl_weight {fmt_weight(ctx.w)} is already at or below "
                                    f"{fmt_weight(float(ctx.rec['tiny_kl_weight']))}, where a smaller weight "
                                    "changes nothing", evidence)
            return _reduce(ctx, why, evidence, blurry=blurry)
        if blurry and late:
            if ctx.w is None:
                return _reduce(ctx, f"still not sharp after {human_epoch(d.epochs - 1)}: "
                               + ", ".join(quality_reasons), quality_evidence, blurry=True)
            pen = ctx.first("penalty_share", "pass")
            neg = f" although the {penalty_phrase(d.penalty.latest)}, negligible" if pen is not None else ""
            return _switch(ctx, f"still not sharp after {human_epoch(d.epochs - 1)}{neg}: "
                           + ", ".join(quality_reasons), quality_evidence + ([pen.id] if pen else []))
    elif ctx.ae and blurry and late:
        return _latent(ctx, f"autoencoder still not sharp after {human_epoch(d.epochs - 1)}: "
                       + ", ".join(quality_reasons), quality_evidence)
    return None


def _stop(ctx: _Ctx, regress: list[Finding], *, after_change: bool) -> Recommendation | None:
    """Stop training: converged, a vanished lr, or overfitting (keep the best val epoch's checkpoint); says whether
    the success criteria are met, or (``after_change``: a step above changes the recipe) to start the next run."""
    stops = [f for f in (ctx.first(r) for r in ("converged", "lr_vanished", "val_recon_divergence")) if f is not None]
    stop_reasons = [f.message for f in stops]
    stop_evidence = [f.id for f in stops]
    # Overfitting (val regressing, train improving): stop and keep the best checkpoint, whether or not the
    # 5-epoch val_recon_divergence rule has fired yet; never "continue" beside a failing trend.
    overfit = [f for f in regress if f.key == "val_recon"]
    if overfit and ctx.first("val_recon_divergence") is None:
        stop_reasons.append(f"{overfit[0].message} while the train reconstruction still improves: overfitting")
    if overfit:
        stop_evidence.append(overfit[0].id)
    best_val = _best_epoch(ctx, overfit[0]) if overfit else None
    if not stop_reasons:
        return None
    success = ctx.by_rule.get("success", [])
    judged = [f for f in success if f.status in ("pass", "fail")]
    unjudged = [f for f in success if f.status == "n/a"]
    if success and all(f.status == "pass" for f in success):
        tail = "; every success criterion is met: the model is ready"
    elif judged and all(f.status == "pass" for f in judged):
        tail = (f"; the {len(judged)} success criteria it logs are met ({len(unjudged)} cannot be judged from "
                "these logs)")
    else:
        tail = "; start the next run with the change above" if after_change else ""
    params = {"why": [e.split(".")[0] for e in stop_evidence]}
    if best_val is not None:
        params["best_epoch"] = best_val
        stop_reasons.append(f"keep the checkpoint of {human_epoch(best_val)} (the best val reconstruction), not "
                            "the last one")
    return Recommendation("stop_training", "; ".join(stop_reasons) + tail, params=params,
                          evidence=tuple(stop_evidence))


def _lower_lr(ctx: _Ctx, regress: list[Finding]) -> Recommendation:
    """A run whose reconstruction got worse: keep the best checkpoint, go on from it with a lower learning rate."""
    f = regress[0]
    for g in regress:
        if g.key == "val_recon":
            f = g
    best_epoch = _best_epoch(ctx, f)
    lr = ctx.d.metrics.get("lr")
    params: dict[str, Any] = {"best_epoch": best_epoch, "best": f.threshold, "final": f.value, "factor": 10.0}
    reason = f"{f.message}: keep the checkpoint of {human_epoch(best_epoch)} (the best), not the last one"
    if lr is not None and math.isfinite(lr) and lr > 0:
        params["lr"] = round_sig(lr / 10.0, 6)
        params["from"] = lr
        reason += f", and go on from it with a 10x lower learning rate ({fmt_weight(lr)} → {fmt_weight(params['lr'])})"
    else:
        reason += ", and go on from it with a lower learning rate (10x)"
    reason += "; the run is not converged"
    command = ctx.command({"lr": params["lr"]}) if "lr" in params else None
    return Recommendation("lower_learning_rate", reason, params=params, evidence=tuple(g.id for g in regress),
                          command=command)


def _best_epoch(ctx: _Ctx, f: Finding) -> int | None:
    t = ctx.d.table
    if t is None or f.key not in t:
        return f.epoch
    s = t[f.key].dropna()
    return int(s.idxmin()) if len(s) else f.epoch


def _continue(ctx: _Ctx) -> Recommendation:
    d = ctx.d
    milestones = [f for fs in ctx.by_rule.values() for f in fs
                  if f.status == "pending" and f.rule.startswith("milestone_") and f.epoch is not None]
    # Pending ahead (not reached yet) vs pending at a milestone already passed (the "converged" line of a run
    # still improving at epoch 60: it waits for the plateau, not for an epoch).
    pending = sorted({(f.epoch, f.rule) for f in milestones if f.epoch >= d.epochs})
    waiting = [f for f in milestones if f.epoch < d.epochs]
    short = ctx.first("too_short")
    short_of = [f for f in ctx.by_rule.get("success", []) if f.status == "fail"]
    parts = []
    if short is not None:
        parts.append(short.message)
    elif d.finished[0] and short_of:
        # A finished run that falls short of its success criteria has a problem; when no rule names another
        # change (no collapse, penalty, blur or plateau), the step left is more training.
        names = ", ".join(f.label or f.id for f in short_of[:3]) + (" ..." if len(short_of) > 3 else "")
        parts.append(f"the run ended at {human_epoch(d.epochs - 1)} short of {len(short_of)} success "
                     f"criteria ({names}) with no other change called for: train it longer (resume from its last "
                     "checkpoint)")
    else:
        parts.append(f"no problem that needs a change after {human_epoch(d.epochs - 1)}")
    if waiting:
        f = waiting[0]
        parts.append(f"the reconstruction is still improving at {human_epoch(d.epochs - 1)}, so "
                     f"'{f.label or f.id}' ({f.rule}) waits: keep training")
    if pending:
        e, rule = pending[0]
        parts.append(f"next checkpoint: {human_epoch(e)} ({rule})")
    if ctx.first("penalty_share", "pass") is not None:
        parts.append(f"the {penalty_phrase(d.penalty.latest)}: negligible")
    return Recommendation("continue", "; ".join(parts), params={"next_milestone": pending[0][0] + 1 if pending else None},
                          evidence=tuple(f.id for f in ([short] if short else [])))
