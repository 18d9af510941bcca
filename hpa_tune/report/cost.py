"""What the search cost, against what the same trials would have cost at full budget (pure).

A trial's cost is its Ray ``time_total_s`` (all epochs, its own wall-clock) times the devices it
held. At full budget each stopped trial would have run ``max_epochs`` at its own mean seconds per
epoch; a trial that errored is counted as it ran (it would not have gone further).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from hpa_tune.report.curves import ray_elapsed_s
from hpa_tune.search.trial_table import ERROR


@dataclass(frozen=True)
class Devices:
    """What one trial held: ``count`` of ``unit`` (GPU, CPU core)."""

    count: float
    unit: str


def devices_per_trial(cpus_per_trial: float, gpus_per_trial: float | str) -> Devices:
    """The device a trial's cost is counted in: its GPUs if it had any, else its CPU cores.

    ``gpus_per_trial: auto`` is resolved against the cluster at run time and not recorded; it is
    counted as one device, named so.
    """
    if gpus_per_trial == "auto":
        return Devices(1.0, "device (gpus_per_trial: auto)")
    gpus = float(gpus_per_trial)
    return Devices(gpus, "GPU") if gpus > 0 else Devices(float(cpus_per_trial), "CPU core")


def cost_table(summary: pd.DataFrame, max_epochs: int, devices: Devices) -> pd.DataFrame:
    """Per trial: epochs and device-hours spent, and what the full budget would have taken.

    Returns:
        Columns trial_id, status, epochs, time_total_s, s_per_epoch, device_hours,
        full_budget_epochs, full_budget_device_hours.
    """
    epochs = summary["epochs"].fillna(0).astype(int)
    seconds = summary["time_total_s"].fillna(0).astype(float)
    per_epoch = (seconds / epochs.where(epochs > 0)).astype(float)
    errored = summary["status"] == ERROR
    full_epochs = epochs.where(errored, max_epochs)
    full_seconds = seconds.where(errored | per_epoch.isna(), per_epoch * max_epochs)
    return pd.DataFrame(
        {
            "trial_id": summary["trial_id"].astype(str),
            "status": summary["status"],
            "epochs": epochs,
            "time_total_s": seconds,
            "s_per_epoch": per_epoch,
            "device_hours": seconds * devices.count / 3600,
            "full_budget_epochs": full_epochs,
            "full_budget_device_hours": full_seconds * devices.count / 3600,
        }
    )


@dataclass(frozen=True)
class CostTotals:
    """The search's totals, spent and at full budget."""

    trial_epochs: int
    full_budget_trial_epochs: int
    device_hours: float
    full_budget_device_hours: float
    search_wall_s: float  # first trial start to last epoch end; nan if unknown

    @property
    def saved_fraction(self) -> float:
        """Share of the full-budget device time that early stopping saved."""
        full = self.full_budget_device_hours
        return 1 - self.device_hours / full if full > 0 else math.nan


def cost_totals(table: pd.DataFrame, history: pd.DataFrame | None = None) -> CostTotals:
    """Sum a :func:`cost_table`; ``history`` (with Ray's timestamps) gives the search's wall-clock."""
    elapsed = None if history is None else ray_elapsed_s(history)
    return CostTotals(
        trial_epochs=int(table["epochs"].sum()),
        full_budget_trial_epochs=int(table["full_budget_epochs"].sum()),
        device_hours=float(table["device_hours"].sum()),
        full_budget_device_hours=float(table["full_budget_device_hours"].sum()),
        search_wall_s=math.nan if elapsed is None else float(elapsed.max()),
    )
