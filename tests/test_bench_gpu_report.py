"""bench/gpu_bench.py's report: the tables of a GPU run from its sections' JSON files."""

import json

from bench import gpu_bench

GIB = 2**30


def _row(arch, path, rate):
    return {
        "arch": arch,
        "size": 224,
        "path": path,
        "batch": 64,
        "train_images_per_s": rate,
        "infer_images_per_s": 2 * rate,
        "gpu_busy_share": 0.95,
        "compute_share_of_step": 0.9,
        "peak_allocated_gib": 3.0,
        "estimated_peak_gib": 3.3,
    }


def _worker(rate, peak):
    return {
        "images_per_s": rate,
        "peak_allocated": peak,
        "peak_reserved": peak,
        "estimate_without_context": 1.1 * peak,
    }


def _write_run(out, steps):
    out.mkdir()
    throughput = {
        "gpu": "H100",
        "rows": [
            _row("resnet18", "plain_fp32", 4000),
            _row("resnet18", "fast", 9000),
            _row("densenet121", "plain_fp32", 900),  # its fast row cut short by the time limit
        ],
    }
    packing = {
        "gpu": "H100",
        "rows": [
            {"arch": "baseline_cnn", "size": 64, "batch": 128, "trials": k, "gpus_per_trial": 1 / k,
             "aggregate_images_per_s": 1000 * k ** 0.8, "per_trial": [_worker(1000, GIB)] * k}
            for k in (1, 4)
        ],
        "refused": {"runs": [{"estimate": "refused", "batch": 256, "estimated_peak_gib": 12.0,
                              "fits": False, "out_of_memory": True}]},
    }  # fmt: skip
    compile_ = {
        "rows": [
            {"arch": "resnet18", "size": 224, "batch": 64, "compile": c, "first_epoch_s": f,
             "steady_epoch_s": s, "steady_images_per_s": 1024 / s, "steps_per_epoch": 16}
            for c, f, s in ((False, 2.0, 1.0), (True, 42.0, 0.8))
        ],
        "compile_cost_s": 39.8,
        "steady_speedup": 1.25,
        "break_even_steps": 3184.0,
    }  # fmt: skip
    for name, part in (("throughput", throughput), ("packing", packing), ("compile", compile_)):
        (out / f"{name}.json").write_text(json.dumps(part))
    steps.write_text("setup\t0\t20\nthroughput\t0\t95\nsearch\t124\t110\n")


def test_the_report_tables_every_section_and_names_what_did_not_run(tmp_path, monkeypatch):
    out, steps = tmp_path / "out", tmp_path / "steps.tsv"
    _write_run(out, steps)
    monkeypatch.setenv("GPU_RUN_STEPS", str(steps))
    monkeypatch.setenv("GPU_RUN_ENV", str(tmp_path / "absent.txt"))

    gpu_bench.report(out, "cuda")

    summary = (out / "summary.md").read_text()
    assert "| resnet18 | 224 | 4,000 | 9,000 | 2.25x |" in summary
    assert "| densenet121 |" not in summary  # half a pair is no comparison
    assert "| search | 124 | 110 |" in summary  # the step stopped at its limit is named
    assert "| baseline_cnn | 64 | 4 | 0.25 | 3,031 | 3.03x | 1.00 | 1.10 | 1.10 |" in summary
    assert "batch 256 (estimate 12.0 GiB, refused at gpus_per_trial 0.125)" in summary
    assert "out of memory" in summary
    assert "pays back after 3,184 steps" in summary
    assert "## search\n\n*not run*" in summary
    figures = json.loads((out / "gpu.json").read_text())
    assert figures["steps"][2] == ["search", "124", "110"]
    assert figures["packing"]["rows"][1]["trials"] == 4


def test_the_search_samples_can_be_drawn_on_either_device():
    # n_test 20 once failed on the GPU: the test set must hold each of the 28 classes once.
    import numpy as np

    from hpa_tune.data.builtin_sample.render import _draw_label_sets

    for device in ("cuda", "cpu"):
        sample = gpu_bench._search_sample(device)
        test_min = min(sample.min_per_class, max(1, sample.n_test // 28))
        assert len(_draw_label_sets(sample.n_test, np.random.default_rng(0), test_min)) == 28
