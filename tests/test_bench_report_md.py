"""BENCHMARKS.md's generated section: a run replaces the subsections it ran and keeps the others."""

from __future__ import annotations

from bench.report_md import update_benchmarks

MACHINE = {
    "date_utc": "2026-11-30 17:00:00Z",
    "cpu": "Test CPU",
    "cpus": 2,
    "memory_gib": 4.0,
    "gpu": None,
    "python": "3.11",
    "torch": "2",
    "pyarrow": "26",
    "numpy": "2",
}


def _figures(sections: list[str], command: str) -> dict:
    figures: dict = {"machine": MACHINE, "command": command, "commit": "abc1234"}
    figures["sections"] = sections
    if "overhead" in sections:
        figures["tune_overhead"] = [
            {
                "reuse_actors": True,
                "trials": 2,
                "sleep_s": 0.5,
                "wall_s": 3.0,
                "trials_own_s": 1.0,
                "tune_overhead_s_per_trial": 0.77,
                "median_gap_between_trials_s": 0.1,
                "first_trial_start_s": 1.0,
            }
        ]
    return figures


def test_a_run_of_one_section_keeps_the_others_and_names_its_own_run(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\nhand-written text\n")
    update_benchmarks(path, _figures(["overhead"], "python -m bench --sections overhead"))
    first = path.read_text()
    assert "hand-written text" in first
    assert "python -m bench --sections overhead" in first

    update_benchmarks(path, _figures(["gpu"], "python -m bench --sections gpu"))
    second = path.read_text()
    overhead = second.split("<!-- bench:overhead -->")[1].split("<!-- /bench:overhead -->")[0]
    assert "python -m bench --sections overhead" in overhead  # kept, with the run that made it
    assert "python -m bench --sections gpu" not in overhead
    gpu = second.split("<!-- bench:gpu -->")[1].split("<!-- /bench:gpu -->")[0]
    assert "python -m bench --sections gpu" in gpu
    assert second.count("<!-- bench:begin -->") == 1
