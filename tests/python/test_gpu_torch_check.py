"""test_gpu_torch_check.py - the GPU check's PyTorch script runs its cycle and race logic on the host backend (no GPU)."""
import os
import subprocess
import sys

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "..", "bench", "gpu_torch_check.py")


def test_smoke_on_the_host_backend(tmp_path):
    out = tmp_path / "torch.txt"
    r = subprocess.run([sys.executable, SCRIPT, "--smoke-host", "--dim", "128", "--cycles", "4",
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = out.read_text().splitlines()
    for key in ("torch_address_stable=1", "torch_output_same_after_cycles=1",
                "torch_race_backup_intact=1", "torch_ok=1"):
        assert key in lines, lines
