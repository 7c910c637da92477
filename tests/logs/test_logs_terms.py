"""Tag resolution (the alias table of issue 3, with split prefixes and suffixes) and --tags TOML files."""

from __future__ import annotations

import pytest

import vaediag
from tbwrite import write_run
from vaediag.errors import InputError, TagsError
from vaediag.terms import METRIC_TERMS, TagMap, load_tag_map, resolve, tag_group

# (base name as foreign code logs it, canonical term)
ALIASES = [
    ("KLD", "kl"), ("kl", "kl"), ("kld", "kl"), ("kl_loss", "kl"), ("kl_div", "kl"), ("loss/kl", "kl"),
    ("kl_divergence", "kl"), ("Reconstruction_Loss", "recon"), ("rec_loss", "recon"), ("recon", "recon"),
    ("recon_loss", "recon"), ("mse", "recon"), ("l1", "recon"), ("nll_loss", "nll"), ("bce", "recon"),
    ("perceptual", "perceptual"), ("p_loss", "perceptual"), ("lpips", "perceptual"), ("ssim", "ssim"),
    ("psnr", "psnr"), ("beta", "kl_weight"), ("kl_weight", "kl_weight"), ("kld_weight", "kl_weight"),
    ("lr-Adam", "lr"), ("lr-AdamW/pg1", "lr"), ("learning_rate", "lr"), ("epoch", "epoch"), ("loss", "loss"),
    ("total_loss", "loss"), ("edge_loss", "edge"), ("ssim_loss", "ssim_loss"), ("hp_metric", "hp_metric"),
    ("kl_weighted", "kl_weighted"), ("recon_weighted", "recon_weighted"),
]
BOOKKEEPING = {"kl_weight", "lr", "epoch", "hp_metric"}
# (format of the logged tag, split it means; None: no marker)
MARKERS = [
    ("{}", None), ("val_{}", "val"), ("val/{}", "val"), ("validation/{}", "val"), ("{}_val", "val"),
    ("{}/val", "val"), ("train/{}", "train"), ("train_{}", "train"), ("{}_train", "train"),
    ("{}_step", None), ("{}_epoch", None), ("VAL_{}", "val"),
]


@pytest.mark.parametrize("fmt, split", MARKERS)
@pytest.mark.parametrize("base, term", ALIASES)
def test_alias_table(base, term, fmt, split):
    tag = fmt.format(base)
    default = "other" if term in BOOKKEEPING else "train"
    assert resolve(tag) == (term, split or default)


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("train/kl_loss", ("kl", "train")),
        ("loss_val/kl", ("kl", "val")),
        ("vae/val/kl", ("kl", "val")),
        ("losses/kl_loss", ("kl", "train")),
        ("Loss/train", ("loss", "train")),
        ("test/kl", ("kl", "other")),
        ("val/recon_grid", (None, "val")),
        ("something_else", (None, "other")),
        ("", (None, "other")),
        ("val_", (None, "other")),
    ],
)
def test_resolve_edge_cases(tag, expected):
    assert resolve(tag) == expected


def test_trainer_tags_resolve_to_their_own_term():
    from vaediag import terms

    for t in terms.TRAIN_STEP_TAGS + terms.VAL_EPOCH_TAGS:
        split, term = t.split("/", 1)
        assert resolve(t) == (term, split), t
    for t in terms.GRADIENT_TAGS:  # train/grad_share/kl is grad_share_kl, never the KL
        split, kind, term = t.split("/")
        assert resolve(t) == (terms.grad_term(kind, term), split), t


@pytest.mark.parametrize(
    "tag, expected",
    [
        ("train/grad_share/kl", ("grad_share_kl", "train")),
        ("train/grad_norm/recon", ("grad_norm_recon", "train")),
        ("train/grad_cos/kl", ("grad_cos_kl", "train")),
        # a callback's own term names: any alias of a loss term maps, through the same table as the terms
        ("grad_norm/kl_loss", ("grad_norm_kl", "train")),
        ("train/grad_share/lpips", ("grad_share_perceptual", "train")),
        ("val/grad_share/KLD", ("grad_share_kl", "val")),
        # anything else stays unmapped: never the loss term itself, never a second recon series
        ("train/grad_norm/disc_loss", (None, "train")),
        ("train/grad_cos/recon", (None, "train")),
        ("train/grad_share/", (None, "train")),
    ],
)
def test_gradient_tags_resolve_to_gradient_terms(tag, expected):
    assert resolve(tag) == expected
    assert tag_group(tag) is None
    grouped = tag.rstrip("/") + "/grey"  # a trailing group, as for the loss terms themselves
    assert resolve(grouped) == expected and tag_group(grouped) == ("grey" if expected[0] else None)


def test_grad_tag_and_grad_term_refuse_what_they_cannot_build():
    from vaediag import terms

    assert terms.grad_tag("grad_norm", "my_term", "val") == "val/grad_norm/my_term"
    with pytest.raises(ValueError, match=r"unknown gradient statistic 'grad_mean'"):
        terms.grad_tag("grad_mean", "kl")
    with pytest.raises(ValueError, match=r"without '/', got 'a/b'"):
        terms.grad_tag("grad_norm", "a/b")
    with pytest.raises(ValueError, match=r"unknown split 'test'"):
        terms.grad_tag("grad_norm", "kl", "test")
    with pytest.raises(ValueError, match=r"unknown gradient statistic 'grad_cos' of 'recon'"):
        terms.grad_term("grad_cos", "recon")


def write_tags(tmp_path, text: str):
    p = tmp_path / "tags.toml"
    p.write_text(text)
    return p


def test_tags_file_maps_exact_and_patterns(tmp_path):
    p = write_tags(
        tmp_path,
        '[tags]\n"my/kl_term" = "kl"\n"eval/divergence" = { term = "kl", split = "val" }\n'
        '[patterns]\n"*/beta_*" = "kl_weight"\n"q_*" = { term = "psnr", split = "val" }\n',
    )
    tm = load_tag_map(p)
    assert resolve("my/kl_term", tm) == ("kl", "train")
    assert resolve("eval/divergence", tm) == ("kl", "val")
    assert resolve("sched/beta_now", tm) == ("kl_weight", "other")
    assert resolve("q_score", tm) == ("psnr", "val")
    assert resolve("KLD", tm) == ("kl", "train")  # built-in aliases still apply


def test_tags_file_through_load(tmp_path):
    write_run(tmp_path / "logs" / "r", {"my/kl_term": [(0, -5.0), (1, -4.0)], "sched/beta_now": [(0, 1e-5)]})
    p = write_tags(tmp_path, '[tags]\n"my/kl_term" = "kl"\n[patterns]\n"*/beta_*" = "kl_weight"\n')
    for tags in (p, str(p), load_tag_map(p)):
        rs = vaediag.load(tmp_path / "logs", tags=tags)
        f = rs.frame
        assert f.query("tag == 'my/kl_term'")["term"].astype(str).tolist() == ["kl", "kl"]
        assert f.query("tag == 'my/kl_term'")["value"].tolist() == [5.0, 4.0]  # mapped to kl: sign rule applies
        assert f.query("tag == 'sched/beta_now'")["term"].astype(str).tolist() == ["kl_weight"]


@pytest.mark.parametrize(
    "text, match",
    [
        ('[tags\n"a" = "kl"', r"tags file .*tags.toml: "),
        ('[tagz]\n"a" = "kl"', r"unknown table\(s\) \['tagz'\] \(choose tags, patterns\)"),
        ('tags = 3', r"tags must be a \[tags\] table of \"tag\" = \"term\" lines"),
        ('[tags]\n"a" = 3', r"\[tags\] 'a' must be a term name or \{term = \.\.\., split = \.\.\.\}"),
        ('[tags]\n"a" = { term = "kl", colour = "red" }', r"\[tags\] 'a' must be a term name"),
        ('[tags]\n"a" = "klx"', r"\[tags\] 'a' maps to unknown term 'klx' \(choose loss, recon, "),
        ('[patterns]\n"a*" = { term = "kl", split = "dev" }', r"\[patterns\] 'a\*' has unknown split 'dev' \(choose train, val, other\)"),
    ],
    ids=["syntax", "table", "not-a-table", "type", "keys", "term", "split"],
)
def test_tags_file_errors(tmp_path, text, match):
    with pytest.raises(TagsError, match=match):
        load_tag_map(write_tags(tmp_path, text))


def test_tags_file_missing_or_unreadable(tmp_path):
    with pytest.raises(InputError, match=r"tags file '.*nope.toml' does not exist; pass a TOML file"):
        load_tag_map(tmp_path / "nope.toml")
    bad = tmp_path / "bin.toml"
    bad.write_bytes(b"\xff\xfe[tags]")
    with pytest.raises(InputError, match=r"tags file .*bin.toml. is not UTF-8 text"):
        load_tag_map(bad)


def test_tagmap_is_hashable_and_cached():
    tm = TagMap(exact=(("x", "kl", None),))
    assert resolve("x", tm) == ("kl", "train") and hash(tm) == hash(TagMap(exact=(("x", "kl", None),)))


# Foreign names (user reports): LDM's contperceptual.py / taming's vqperceptual.py tags, recon losses
# named with their pixel loss, per-group reconstruction losses.
@pytest.mark.parametrize(
    "tag, term, split, group",
    [
        ("train/recon_l1", "recon", "train", None),
        ("val/recon_mse", "recon", "val", None),
        ("recon_bce", "recon", "train", None),
        ("train/recon_loss_l1", "recon", "train", None),
        ("val/recon_loss/grey", "recon", "val", "grey"),
        ("val/recon_loss/colour", "recon", "val", "colour"),
        ("val/psnr/grey", "psnr_grey", "val", "grey"),
        ("train/rec_loss", "recon", "train", None),
        ("train/nll_loss", "nll", "train", None),
        ("val/nll_loss", "nll", "val", None),
        ("train/logvar", "logvar", "train", None),
        ("logvar", "logvar", "other", None),
        ("train/kl_loss", "kl", "train", None),
        ("train/g_loss", "g_loss", "train", None),
        ("train/disc_loss", "disc_loss", "train", None),
        ("train/d_weight", "d_weight", "train", None),
        ("train/disc_factor", "disc_factor", "train", None),
        ("train/quant_loss", "vq_loss", "train", None),
        ("VQ_Loss", "vq_loss", "train", None),
        ("val_VQ_Loss", "vq_loss", "val", None),
        ("commitment_loss", "vq_loss", "train", None),
        ("codebook_loss", "vq_loss", "train", None),
        ("train/logits_real", None, "train", None),
    ],
)
def test_foreign_names(tag, term, split, group):
    from vaediag.terms import tag_group

    assert resolve(tag) == (term, split)
    assert tag_group(tag) == group


def test_foreign_terms_are_canonical_and_apart_from_ours():
    from vaediag import terms

    assert set(terms.FOREIGN_LOSS_TERMS) <= set(terms.CANONICAL_TERMS)
    assert not set(terms.FOREIGN_LOSS_TERMS) & set(terms.LOSS_TERMS)
    assert terms.LOSS_TERMS == ("recon", "perceptual", "ssim_loss", "edge", "kl")
    assert all(t in terms.TERM_INFO for t in terms.CANONICAL_TERMS)
    assert len(set(terms.CANONICAL_TERMS)) == len(terms.CANONICAL_TERMS)


@pytest.mark.parametrize(
    "tag, aggregation",
    [
        ("loss_step", "step"), ("loss_epoch", "epoch"), ("val_loss_epoch", "epoch"), ("train/kl_step", "step"),
        ("KLD_epoch", "epoch"), ("loss", None), ("epoch", None), ("train/epoch", None), ("global_step", None),
        ("my_metric_epoch", None), ("val/recon_grid", None),
    ],
)
def test_tag_aggregation(tag, aggregation):
    from vaediag.terms import tag_aggregation

    assert tag_aggregation(tag) == aggregation
    if aggregation is not None:  # both forks resolve to the same term
        stem = tag[: -len(aggregation) - 1]
        assert resolve(tag) == resolve(stem)


@pytest.mark.parametrize(
    "tag, marker",
    [("kl", None), ("val/kl", "val"), ("kl_val", "val"), ("vae/val/kl", "val"), ("loss_epoch", None),
     ("test/kl", "other"), ("train_loss", "train")],
)
def test_split_marker(tag, marker):
    from vaediag.terms import split_marker

    assert split_marker(tag) == marker


def test_realworld_tags_resolve_as_before(realworld):
    """The new aliases change nothing for the committed real logs (AntixK lineage tags)."""
    rs = vaediag.load(realworld)
    got = {t: resolve(t) for t in map(str, rs.frame["tag"].unique())}
    assert got == {
        "KLD": ("kl", "train"), "Reconstruction_Loss": ("recon", "train"), "epoch": ("epoch", "other"),
        "hp_metric": ("hp_metric", "other"), "loss": ("loss", "train"), "lr-Adam": ("lr", "other"),
        "val_KLD": ("kl", "val"), "val_Reconstruction_Loss": ("recon", "val"), "val_loss": ("loss", "val"),
    }


def test_board_layout_charts_every_trainer_scalar_once():
    from vaediag import terms

    groups = terms.board_layout()
    tags = [t for g in groups for c in g.charts for t in c.tags]
    assert sorted(tags) == sorted(terms.TRAINER_SCALAR_TAGS)  # each once, none the trainer does not log
    assert [g.closed for g in groups] == [False, False, False, False, True]  # bookkeeping apart, collapsed
    assert sorted(c.tags for c in groups[3].charts)[0] == terms.GRADIENT_TAGS[-1:]  # the cosine alone
    without = {t for g in terms.board_layout(gradients=False) for c in g.charts for t in c.tags}
    assert sorted(without) == sorted(set(terms.TRAINER_SCALAR_TAGS) - set(terms.GRADIENT_TAGS))  # --grad-share-every 0
    assert sorted(t for _, ts in terms.QUALITY_CHARTS for t in ts) == sorted(terms.METRIC_TERMS)
    for chart in groups[0].charts + groups[1].charts:  # loss terms: train beside val
        assert [t.split("/")[0] for t in chart.tags] == ["train", "val"], chart


@pytest.mark.parametrize(
    "loss_terms, metric_terms, absent",
    [
        (("recon", "ssim_loss", "edge", "kl"), None, {"train/perceptual", "val/perceptual_weighted"}),
        (("recon", "kl"), [t for t in METRIC_TERMS if not t.endswith("_grey")],
         {"train/edge", "val/psnr_grey", "val/ssim_grey"}),
        (("kl",), ["psnr"], {"val/ssim", "val/active_units"}),
    ],
)
def test_board_layout_charts_only_what_the_run_logs(loss_terms, metric_terms, absent):
    from vaediag import terms

    groups = terms.board_layout(loss_terms, terms.METRIC_TERMS if metric_terms is None else metric_terms)
    tags = {t for g in groups for c in g.charts for t in c.tags}
    assert not absent & tags
    assert all(c.tags for g in groups for c in g.charts)  # no empty chart
    if metric_terms == ["psnr"]:
        assert [c.tags for c in groups[2].charts] == [("val/psnr",)]


def test_board_layout_refuses_unknown_terms():
    from vaediag import terms

    with pytest.raises(ValueError, match=r"unknown term\(s\) \['lpips'\]"):
        terms.board_layout(["recon", "lpips"])


def test_module_doctests():
    import doctest

    from vaediag import terms

    assert doctest.testmod(terms).failed == 0
