"""The hardware catalog and detection."""

from __future__ import annotations

import pytest

from finegpt_pipeline.hardware import CATALOG, GIB, detect, get_hardware, match_device_name

REQUIRED = ["rtx3090", "rtx4070", "rtx4070ti", "rtx4080", "rtx4090", "a6000", "l4", "t4",
            "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "cpu"]


def test_catalog_covers_the_issue_list_with_sane_figures():
    for key in REQUIRED:
        hw = CATALOG[key]
        assert hw.key == key
        assert 1e10 < hw.peak_flops < 2e15, key
        assert hw.memory_bytes >= 8 * GIB and hw.board_watts > 0 and hw.bandwidth_bytes_per_s > 0
        assert 0 < hw.expected_mfu <= 1
        assert hw.source, f"{key} has no cited source"
    # datasheet anchors: dense bf16, not the sparse or fp16-accumulate marketing figures
    assert CATALOG["rtx4070"].peak_flops == pytest.approx(58.3e12)
    assert CATALOG["h100-sxm"].peak_flops == pytest.approx(989.4e12)
    assert CATALOG["a100-80gb"].peak_flops == pytest.approx(312e12)
    assert CATALOG["t4"].dtype == "float16" and not CATALOG["t4"].bf16
    assert CATALOG["h200"].memory_bytes > CATALOG["h100-sxm"].memory_bytes


def test_get_hardware_is_forgiving_about_case_and_rejects_unknown_names():
    assert get_hardware("RTX4090").key == "rtx4090"
    assert get_hardware("h100_sxm").key == "h100-sxm"
    with pytest.raises(ValueError, match="unknown GPU 'rtx9090'.*rtx4070"):
        get_hardware("rtx9090")


@pytest.mark.parametrize("name, memory, key", [
    ("NVIDIA GeForce RTX 4070", 12 * GIB, "rtx4070"),
    ("NVIDIA GeForce RTX 4070 Ti", 12 * GIB, "rtx4070ti"),
    ("NVIDIA A100-SXM4-40GB", 40 * GIB, "a100-40gb"),
    ("NVIDIA A100 80GB PCIe", 80 * GIB, "a100-80gb"),
    ("NVIDIA H100 80GB HBM3", 80 * GIB, "h100-sxm"),
    ("NVIDIA H100 PCIe", 80 * GIB, "h100-pcie"),
    ("NVIDIA H200", 141 * 10**9, "h200"),
    ("NVIDIA L4", 23 * GIB, "l4"),
    ("NVIDIA L40S", 48 * GIB, None),
    ("Tesla T4", 15 * GIB, "t4"),
    ("Some Future GPU", 8 * GIB, None),
])
def test_device_names_map_to_catalog_keys(name, memory, key):
    assert match_device_name(name, memory) == key


def test_detect_on_this_cpu_measures_a_rate(finegpt_home):
    import torch

    if torch.cuda.is_available():
        pytest.skip("GPU present: detection returns the GPU")
    hw = detect()
    assert hw.kind == "cpu" and hw.detected and hw.dtype == "float32"
    assert 1e8 < hw.peak_flops < 5e12
    assert hw.memory_bytes > GIB
    assert "measured" in hw.source


def test_native_bf16_is_a_hardware_fact_and_excludes_emulation(monkeypatch):
    """Asked of `hardware` (the trainer's runtime imports it from there), never counting
    emulation; a torch without the argument checks hardware support only."""
    import torch

    from finegpt_pipeline import hardware, runtime

    asked = []

    def supported(including_emulation=True):
        asked.append(including_emulation)
        return False

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert hardware.native_bf16() is False and asked == [False]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # torch < 2.3
    assert hardware.native_bf16() is True
    assert runtime.native_bf16 is hardware.native_bf16
