"""securedc.audits and securedc.plugins are importable from an editable install AND a built wheel."""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_audits_and_plugins() -> None:
    import securedc.audits
    import securedc.plugins

    assert Path(securedc.audits.__file__).resolve().parent == ROOT / "audits"
    assert Path(securedc.plugins.__file__).resolve().parent == ROOT / "plugins"
    assert "audits" not in sys.modules, "audits must never be importable as a top-level package"


def test_console_script_entry_point() -> None:
    from importlib.metadata import entry_points

    eps = {e.name: e.value for e in entry_points(group="console_scripts")}
    assert eps.get("securedc") == "securedc.cli:main"


def test_wheel_contains_mapped_packages(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    wheels = list(tmp_path.glob("securedc-*.whl"))
    assert len(wheels) == 1
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    for required in ("securedc/__init__.py", "securedc/cli.py", "securedc/audits/__init__.py",
                     "securedc/audits/base.py", "securedc/plugins/__init__.py", "securedc/discrepancy/mmd.py"):
        assert required in names, f"{required} missing from the wheel"
    assert not any(n.startswith(("audits/", "plugins/", "tests/")) for n in names)
    entry = [n for n in names if n.endswith("entry_points.txt")]
    assert entry and "securedc = securedc.cli:main" in zipfile.ZipFile(wheels[0]).read(entry[0]).decode()


@pytest.mark.slow
def test_wheel_installs_into_fresh_venv(tmp_path) -> None:
    """Install the wheel (no deps) in a venv that sees the current site-packages and import the mapped packages."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "w")], check=True, timeout=300)
    wheel = next((tmp_path / "w").glob("*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # let the new venv see this interpreter's packages (torch, …): --system-site-packages would only
    # reach the base interpreter's, not those of the venv the tests run in
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "_parent_site.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True, timeout=300)
    out = subprocess.run([str(py), "-c", "import securedc.audits, securedc.plugins; print(securedc.audits.__file__)"],
                         capture_output=True, text=True, cwd=tmp_path, check=True)
    assert str(venv) in out.stdout
