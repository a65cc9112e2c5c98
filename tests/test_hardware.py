"""System RAM as the app sees it (defect 7): psutil's figures on any OS, lowered to a container's cgroup v1/v2
memory limit, and a profile choice whose offloaded weights fit in what is really there."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from qwen_image import hardware
from qwen_image.factory import choose_setup
from qwen_image.hardware import GiB, cgroup_memory, detect, system_memory

HOST = SimpleNamespace(total=64 * GiB, available=50 * GiB)


def write(path, text) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """A fake /proc/self/cgroup and /sys/fs/cgroup, and psutil reporting a 64 GiB host."""
    import psutil

    proc, root = tmp_path / "proc-self-cgroup", tmp_path / "cgroup"
    root.mkdir()
    monkeypatch.setattr(hardware, "PROC_CGROUP", proc, raising=False)
    monkeypatch.setattr(hardware, "CGROUP_ROOT", root, raising=False)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: HOST)
    return SimpleNamespace(proc=proc, root=root)


def test_cgroup_v2_container(machine):
    write(machine.proc, "0::/\n")
    write(machine.root / "memory.max", f"{16 * GiB}\n")
    write(machine.root / "memory.current", f"{6 * GiB}\n")
    write(machine.root / "memory.stat", f"anon 123\ninactive_file {2 * GiB}\nactive_file 5\n")
    assert cgroup_memory() == (16 * GiB, 4 * GiB)
    assert system_memory() == pytest.approx((16.0, 12.0))


def test_cgroup_v2_limit_on_an_ancestor(machine):
    write(machine.proc, "0::/kubepods/pod1/box\n")
    write(machine.root / "kubepods/pod1/box/memory.max", "max\n")
    write(machine.root / "kubepods/pod1/box/memory.current", f"{1 * GiB}\n")
    write(machine.root / "kubepods/pod1/memory.max", f"{8 * GiB}\n")
    write(machine.root / "kubepods/pod1/memory.current", f"{3 * GiB}\n")
    assert system_memory() == pytest.approx((8.0, 5.0))


def test_cgroup_v1_hybrid_layout(machine):
    """v1 memory controller beside an empty v2 hierarchy (as on this kind of machine)."""
    write(machine.proc, "4:memory:/docker/abc\n1:cpu:/\n0::/\n")
    write(machine.root / "unified/cgroup.procs", "1\n")
    write(machine.root / "memory/memory.limit_in_bytes", "9223372036854771712\n")  # the host: no limit
    write(machine.root / "memory/docker/abc/memory.limit_in_bytes", f"{12 * GiB}\n")
    write(machine.root / "memory/docker/abc/memory.usage_in_bytes", f"{5 * GiB}\n")
    write(machine.root / "memory/docker/abc/memory.stat", f"inactive_file 1\ntotal_inactive_file {1 * GiB}\n")
    assert system_memory() == pytest.approx((12.0, 8.0))


def test_cgroup_v1_own_namespace(machine):
    """Inside its own cgroup namespace the process's path is not mounted; the mount's root is the container."""
    write(machine.proc, "7:memory:/not/mounted/here\n")
    write(machine.root / "memory/memory.limit_in_bytes", f"{10 * GiB}\n")
    write(machine.root / "memory/memory.usage_in_bytes", f"{4 * GiB}\n")
    assert system_memory() == pytest.approx((10.0, 6.0))


def test_no_limit_and_no_cgroup_files(machine):
    write(machine.proc, "4:memory:/\n0::/\n")
    write(machine.root / "memory/memory.limit_in_bytes", "9223372036854771712\n")
    write(machine.root / "memory.max", "max\n")
    assert cgroup_memory() is None
    assert system_memory() == pytest.approx((64.0, 50.0))
    machine.proc.unlink()  # Windows, macOS: no cgroups, psutil alone (the old code assumed 16 GiB there)
    assert system_memory() == pytest.approx((64.0, 50.0))


def test_profile_choice_in_a_20_gib_container_on_a_64_gib_host(machine):
    """The 24gb profile offloads ~23 GiB of Qwen-Image-2.1 weights to RAM: right for the 64 GiB host, wrong for a
    container limited to 20 GiB, where the old /proc/meminfo reading still saw the host."""
    write(machine.proc, "0::/\n")
    write(machine.root / "memory.max", f"{20 * GiB}\n")
    write(machine.root / "memory.current", f"{1 * GiB}\n")
    hw = replace(detect(), cuda=True, gpu_name="RTX 4090", vram_total_gb=24.0, vram_free_gb=23.5)
    assert hw.ram_total_gb == pytest.approx(20.0) and hw.ram_available_gb == pytest.approx(19.0)
    choice = choose_setup("qwen-image-2.1", hardware=hw)
    assert choice.plan.profile != "24gb" and choice.plan.fits
    assert choice.plan.host_ram_gb <= hw.ram_available_gb * 0.85
    roomy = choose_setup("qwen-image-2.1", hardware=replace(hw, ram_total_gb=64.0, ram_available_gb=50.0))
    assert roomy.plan.profile == "24gb"


def test_no_profile_fits_the_ram_picks_the_least_offloading():
    hw = hardware.Hardware(True, "RTX 4090", 24.0, 23.5, 8.0, 6.0)
    choice = choose_setup("qwen-image", hardware=hw)
    assert choice.plan.fits is False and "system RAM" in choice.reason
    from qwen_image.planner import planning_workload, predict
    from qwen_image.profiles import gpu_profiles

    fitting = [
        predict(choice.spec, p, planning_workload(choice.spec), budget_gb=23.0) for p in gpu_profiles("qwen-image")
    ]
    assert choice.plan.host_ram_gb == min(p.host_ram_gb for p in fitting if p.fits)
