import json
import os

import pytest

from md_export.benchmarks.compare import compare
from md_export.benchmarks.harness import Timing, make_item
from md_export.benchmarks.report import chart_png, markdown_table, write_json
from md_export.benchmarks.schema import add_item, new_result
from md_export.errors import MdExportError, OutputError


def result_with(latencies: dict[str, list[float]]) -> dict:
    result = new_result({"kind": "preset", "preset": "mobilediffusion-tiny"}, {"threads": 2, "warmup": 0, "runs": 3})
    for name, samples in latencies.items():
        add_item(result, make_item(name=name, level="component", component=name.split("/")[0], runtime="onnxruntime",
                                   precision="fp32", threads=2, timing=Timing(1.0, 1.0, samples)))
    return result


def test_markdown_table_lists_every_item_and_stage_breakdown():
    result = result_with({"unet/onnxruntime/fp32": [10.0, 11.0, 12.0], "text_encoder/onnxruntime/fp32": [1.0, 1.0, 1.0]})
    result["items"][0]["stages"] = {"text_encoder": 1.0, "unet": 80.0, "unet_per_step": 10.0, "vae_decoder": 5.0,
                                    "total": 86.0}
    text = markdown_table(result)
    assert "| unet/onnxruntime/fp32 | onnxruntime | fp32 | 2 |" in text
    assert "| 11.00 |" in text  # p50
    assert "text_encoder/onnxruntime/fp32" in text
    assert "| unet/onnxruntime/fp32 | 1.0 | 80.0 | 10.0 | 5.0 | 86.0 |" in text


def test_chart_is_a_png():
    png = chart_png(result_with({"unet/onnxruntime/fp32": [10.0, 11.0], "vae/onnxruntime/fp32": [3.0, 4.0]}))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_atomic_json_write_and_bad_target(tmp_path):
    out = tmp_path / "r.json"
    write_json(out, {"a": 1})
    assert json.loads(out.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind
    with pytest.raises(OutputError, match="does not exist"):
        write_json(tmp_path / "missing" / "r.json", {})
    with pytest.raises(OutputError, match="is a directory"):
        write_json(tmp_path, {})


def test_compare_ratios_and_regressions():
    a = result_with({"unet": [10.0, 10.0, 10.0], "vae": [5.0, 5.0, 5.0], "gone": [1.0]})
    b = result_with({"unet": [11.5, 11.5, 11.5], "vae": [5.2, 5.2, 5.2], "new": [1.0]})
    c = compare(a, b, threshold=0.10)
    ratios = {r.key: r.ratio for r in c.rows}
    assert ratios == pytest.approx({"unet": 1.15, "vae": 1.04})
    assert [r.key for r in c.regressions] == ["unet"] and c.exit_code == 1
    assert c.only_a == ["gone"] and c.only_b == ["new"]
    assert compare(a, b, threshold=0.20).exit_code == 0
    assert compare(b, a, threshold=0.0).exit_code == 0  # faster is never a regression


def test_compare_errors():
    a = result_with({"unet": [10.0]})
    with pytest.raises(MdExportError, match="share no item"):
        compare(a, result_with({"vae": [1.0]}))
    with pytest.raises(MdExportError, match="metric"):
        compare(a, a, metric="p42")
    with pytest.raises(MdExportError, match="threshold"):
        compare(a, a, threshold=-1)


def test_compare_cli_exit_codes(tmp_path, cli, capsys):
    a, b, bad = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "bad.json"
    write_json(a, result_with({"unet": [10.0, 10.0]}))
    write_json(b, result_with({"unet": [13.0, 13.0]}))
    bad.write_text('{"schema": "nope"}')
    assert cli(["bench", "compare", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert "1.300" in out and "REGRESSION" in out
    assert cli(["bench", "compare", str(a), str(b), "--threshold", "0.5"]) == 0
    assert cli(["bench", "compare", str(b), str(a)]) == 0
    assert cli(["bench", "compare", str(a), str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli(["bench", "compare", str(a), str(bad)]) == 2
    assert "not a valid bench result" in capsys.readouterr().err
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())
    assert os.path.getsize(a) > 0
