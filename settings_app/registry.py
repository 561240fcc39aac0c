"""The documented settings: name → type, default, bounds (reference: task-engine-api.md, SETTINGS)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SettingSpec:
    name: str
    default: int
    minimum: int
    maximum: int
    description: str


SPECS: dict[str, SettingSpec] = {
    spec.name: spec
    for spec in [
        SettingSpec("max_jobs", 2, 0, 10_000, "The maximum number of concurrent jobs."),
        SettingSpec("priority_slots", 0, 0, 10_000, "Concurrent job slots reserved for high-priority jobs."),
        SettingSpec("priority_threshold", 5, 1, 10, "Jobs with priority <= this are priority jobs."),
        SettingSpec("schedule_interval", 60, 1, 86_400, "Seconds between scheduler sweeps."),
        SettingSpec("retry_delay", 5, 0, 86_400, "Seconds between retries of a failed task."),
        SettingSpec("retry_limit", 3, 0, 100, "Retries of a failed task before the job is abandoned."),
        SettingSpec(
            "cleanup_days", 30, 1, 36_500, "Terminal jobs older than this (and not persist) are deleted."
        ),
    ]
}
