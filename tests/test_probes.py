"""The lever probe table: paired differences with the baseline over seeds, the seed read from the run's config
when its command line did not set one, and a figure of mIoU against minutes."""

from __future__ import annotations

import json

import pytest
import yaml

from seg.analysis.probes import main, parse_probe, to_markdown

SPLIT = "train@0006R0"


def make_run(root, name, seed, held, val, seconds, on_command_line=True):
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    overrides = ["+experiment=x", *([f"seed={seed}"] if on_command_line else [])]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed}))
    metrics = {"mIoU": val, "global_step": 226, "train_wall_s": seconds, "extra_val": {SPLIT: {"mIoU": held}}}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def test_table_pairs_each_probe_with_the_baseline_by_seed(tmp_path):
    make_run(tmp_path, "b1", 1, 0.30, 0.50, 300)
    make_run(tmp_path, "b2", 2, 0.40, 0.52, 300)
    make_run(tmp_path, "b42", 42, 0.35, 0.51, 300, on_command_line=False)  # the config's seed
    make_run(tmp_path, "l1", 1, 0.32, 0.48, 360)
    make_run(tmp_path, "l2", 2, 0.43, 0.50, 360)
    make_run(tmp_path, "l42", 42, 0.36, 0.49, 360, on_command_line=False)
    base = parse_probe(f"none={tmp_path}/b*")
    lever = parse_probe(f"lever={tmp_path}/l1,{tmp_path}/l2,{tmp_path}/l42")
    table = to_markdown([base, lever], base, SPLIT)
    # held-out differences 0.02, 0.03, 0.01: mean 0.02, sd 0.01, t(2) = 4.303 -> half-width 0.0248; val -0.02 each
    assert "| lever | 1, 2, 42 | 0.3700 | +0.0200 [-0.0048, +0.0448], ahead in 3/3: not shown |" in table
    assert "| 0.4900 | -0.0200 [-0.0200, -0.0200], ahead in 0/3: shown | 6.0 | 226 |" in table
    assert "| none | 1, 2, 42 | 0.3500 | - | 0.5100 | - | 5.0 | 226 |" in table


def test_cli_writes_the_figure_and_names_a_bad_folder(tmp_path, capsys):
    make_run(tmp_path, "b1", 1, 0.30, 0.50, 300)
    make_run(tmp_path, "l1", 1, 0.32, 0.49, 360)
    out = tmp_path / "fig" / "probes.png"
    main(["--baseline", "none", "--split", SPLIT, "--out", str(out), f"none={tmp_path}/b1", f"lever={tmp_path}/l1"])
    assert out.stat().st_size > 10_000
    assert "+0.0200 (one pair)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match=r"error: .*nowhere is not a run folder"):
        main(["--baseline", "none", "--split", SPLIT, f"none={tmp_path}/nowhere"])
    with pytest.raises(SystemExit, match="error: a probe is NAME=RUN"):
        main(["--baseline", "none", "--split", SPLIT, "none"])


def test_plot_spreads_half_and_full_resolution_minutes_on_a_log_axis(tmp_path):
    from seg.analysis.probes import plot

    make_run(tmp_path, "half", 1, 0.33, 0.49, 270)
    make_run(tmp_path, "full", 1, 0.46, 0.80, 2250)
    close = plot([parse_probe(f"half={tmp_path}/half")], SPLIT).axes[0]
    spread = plot([parse_probe(f"half={tmp_path}/half"), parse_probe(f"full={tmp_path}/full")], SPLIT).axes[0]
    assert close.get_xscale() == "linear" and spread.get_xscale() == "log"
    assert [t.get_text() for t in spread.get_xticklabels()] == ["4", "5", "6", "8", "10", "15", "20", "30", "40"]
    assert [t.get_text() for t in spread.get_legend().get_texts()] == ["half", "full"]


def test_every_probe_of_a_large_screen_has_its_own_colour_and_marker(tmp_path):
    from seg.analysis.probes import plot, probe_style

    styles = {(probe_style(i)["color"], probe_style(i)["marker"]) for i in range(90)}
    assert len(styles) == 90
    probes = []
    for i in range(12):
        probes.append(parse_probe(f"p{i}={make_run(tmp_path, f'r{i}', 1, 0.3 + i / 100, 0.5, 300)}"))
    handles = plot(probes, SPLIT).axes[0].get_legend().legend_handles
    looks = {(tuple(h.get_facecolor()[0]), h.get_paths()[0].vertices.tobytes()) for h in handles}
    assert len(looks) == 12  # probes 1 and 11 share a colour, not a marker


def test_a_long_title_stays_inside_the_figure_beside_a_wide_legend(tmp_path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from seg.analysis.probes import plot

    long = "full res, 600 steps: DeepLabV3+ separable OS 32 + brightness-contrast jitter"
    probes = [parse_probe(f"{long} {i}={make_run(tmp_path, f'r{i}', 1, 0.3, 0.5, 300)}") for i in range(20)]
    title = "CamVid, held-out sequence 0006R0: mIoU per lever against training minutes (EPYC, fp32; " * 2
    fig = plot(probes, SPLIT, title)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in fig.texts + [fig.axes[0].title] if t.get_text()]
    assert texts, "the figure has no title"
    for text in texts:
        box = text.get_window_extent(renderer)
        assert 0 <= box.x0 and box.x1 <= fig.bbox.width, f"title outside the figure: {box}"
