"""vaediag.render.plots: (fig, ax), Agg, deterministic PNG bytes, one colour per run, decisions marked."""

from __future__ import annotations

import pytest

import report_md as md


@pytest.mark.slow
def test_plot_functions_return_fig_and_axes_and_deterministic_png():
    import numpy as np
    import pandas as pd

    from vaediag.render import plots

    tables = {
        "a": pd.DataFrame({"kl": [10.0, 20.0, 30.0], "recon": [0.3, 0.2, 0.1], "psnr": [20.0, 22.0, 25.0],
                           "ssim": [0.5, 0.6, 0.7], "penalty_share": [0.1, 0.05, 0.01], "kl_weight": [1e-3, 1e-3, 1e-4]},
                          index=pd.Index([0, 1, 2], name="epoch")),
        "b": pd.DataFrame({"kl": [5.0], "recon": [0.4]}, index=pd.Index([0], name="epoch")),
    }
    styles = plots.run_styles(["a", "b"])
    assert styles["a"].colour != styles["b"].colour
    decisions = [plots.DecisionMark(run="a", epoch=1, kl_weight=1e-4, number=1),
                 plots.DecisionMark(run="a", epoch=2, kl_weight=0.0, number=2, applied=False)]
    with plots.plot_style():
        for draw in (lambda: plots.plot_loss_terms(tables, styles), lambda: plots.plot_quality(tables, styles),
                     lambda: plots.plot_penalty_share(tables, styles),
                     lambda: plots.plot_kl_weight(tables, styles, decisions=decisions)):
            fig, axes = draw()
            assert hasattr(fig, "savefig") and len(np.atleast_1d(axes)) >= 1
            one, two = plots.png_bytes(fig), plots.png_bytes(fig)
            assert one == two and one.startswith(md.PNG_MAGIC) and md.png_text_chunks(one) == []
        # The decisions are marked and numbered (D2, a switch to kl_weight 0, sits on the axis edge).
        fig, axes = plots.plot_kl_weight(tables, styles, decisions=decisions)
        assert [t.get_text() for t in axes[0].texts] == ["D1", "D2"]
        assert axes[0].get_yscale() == "log"
        # One colour per run in every plot: the kl_weight line of run "a" has run a's colour.
        assert axes[0].lines[0].get_color() == styles["a"].colour
