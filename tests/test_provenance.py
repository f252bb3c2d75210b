"""smvi.store.provenance: the machine a record names and the wall times the report sums, on hand-made inputs."""

from __future__ import annotations

from smvi.store.provenance import cpu_model, fmt_seconds, host_info, train_seconds


def test_cpu_model_reads_cpuinfo_and_host_info_names_the_device(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Example CPU @ 2.0GHz\n")
    assert cpu_model(info) == "Example CPU @ 2.0GHz"
    assert cpu_model(tmp_path / "missing") is None or isinstance(cpu_model(tmp_path / "missing"), str)
    host = host_info("cpu")
    assert host["device"] == "cpu" and host["cpus"] >= 1 and host["os"]
    assert host_info()["device"] is None


def test_training_wall_time_is_the_sum_of_its_epochs_or_unknown():
    assert train_seconds([{"epoch": 1, "seconds": 10.5}, {"epoch": 2, "seconds": 20}]) == 30.5
    assert train_seconds([{"epoch": 1, "seconds": 10.5}, {"epoch": 2}]) is None  # an epoch without a time
    assert train_seconds([{"epoch": 1, "seconds": "10"}]) is None and train_seconds([]) is None


def test_seconds_read_as_seconds_minutes_or_hours():
    assert [fmt_seconds(s) for s in (None, 42.4, 119.6, 754, 7199, 12240)] == [
        "unknown",
        "42 s",
        "2.0 min",
        "12.6 min",
        "120.0 min",
        "3.4 h",
    ]
