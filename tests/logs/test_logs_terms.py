"""Tag resolution (the alias table of issue 3, with split prefixes and suffixes) and --tags TOML files."""

from __future__ import annotations

import pytest

import vaediag
from tbwrite import write_run
from vaediag.errors import InputError, TagsError
from vaediag.terms import TagMap, load_tag_map, resolve

# (base name as foreign code logs it, canonical term)
ALIASES = [
    ("KLD", "kl"), ("kl", "kl"), ("kld", "kl"), ("kl_loss", "kl"), ("kl_div", "kl"), ("loss/kl", "kl"),
    ("kl_divergence", "kl"), ("Reconstruction_Loss", "recon"), ("rec_loss", "recon"), ("recon", "recon"),
    ("recon_loss", "recon"), ("mse", "recon"), ("l1", "recon"), ("nll_loss", "recon"), ("bce", "recon"),
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
    with pytest.raises(InputError, match=r"cannot read tags file .*bin.toml"):
        load_tag_map(bad)


def test_tagmap_is_hashable_and_cached():
    tm = TagMap(exact=(("x", "kl", None),))
    assert resolve("x", tm) == ("kl", "train") and hash(tm) == hash(TagMap(exact=(("x", "kl", None),)))
