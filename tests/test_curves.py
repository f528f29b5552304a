"""seg.analysis.curves: validation rows of a Lightning metrics.csv become learning curves, a table and a figure."""

from __future__ import annotations

import pytest

from seg.analysis.curves import main, read_curve, to_markdown

# Lightning's CSV logger: training rows without val columns, validation rows logged at global_step - 1
CSV = """epoch,step,train/loss,time/train_s,val/IoU/road,val/IoU/pole,val/mIoU
0,9,1.5,,,,
0,9,,30.0,0.8,0.0,0.4
1,19,1.2,,,,
1,19,,61.5,0.9,0.25,0.575
"""


def _run(tmp_path, text=CSV, name="run"):
    run = tmp_path / name
    (run / "csv").mkdir(parents=True)
    (run / "csv" / "metrics.csv").write_text(text)
    return run


def test_reads_each_validation_with_its_step_time_and_classes(tmp_path):
    curve = read_curve(_run(tmp_path), label="ce")
    assert curve.label == "ce" and curve.steps == [10, 20]  # optimizer steps finished at each validation
    assert curve.seconds == [30.0, 61.5] and curve.miou == [0.4, 0.575]
    assert curve.per_class == [{"road": 0.8, "pole": 0.0}, {"road": 0.9, "pole": 0.25}]
    table = to_markdown(curve).splitlines()
    assert table[0] == "| step | train min | mIoU | road | pole |"
    assert table[3] == "| 20 | 1.0 | 0.5750 | 0.900 | 0.250 |"


def test_extra_validation_splits_are_read_beside_val(tmp_path):
    text = CSV.replace("val/mIoU\n", "val/mIoU,val/train@0006R0/mIoU,val/train@0006R0/IoU/road\n", 1)
    lines = text.splitlines()
    lines[2] += ",0.3,0.7"
    lines[4] += ",0.45,0.8"
    curve = read_curve(_run(tmp_path, "\n".join(lines) + "\n"))
    assert curve.miou == [0.4, 0.575] and curve.extra == {"train@0006R0": [0.3, 0.45]}
    assert curve.per_class[-1] == {"road": 0.9, "pole": 0.25}  # the val split's classes only


def test_cli_writes_the_figure_and_names_a_bad_run(tmp_path, capsys):
    a, b = _run(tmp_path, name="a"), _run(tmp_path, name="b")
    out = tmp_path / "fig" / "curves.png"
    main([str(a), str(b), "--labels", "ce", "lovasz", "--out", str(out)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "## lovasz" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nope")])
    assert f"{tmp_path / 'nope' / 'csv' / 'metrics.csv'} not found" in capsys.readouterr().err
    early = _run(tmp_path, CSV.splitlines()[0] + "\n0,9,1.5,,,,\n", name="early")
    with pytest.raises(ValueError, match="no val/mIoU rows"):
        read_curve(early)
