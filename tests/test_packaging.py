"""The package as a user gets it: the scratchcap command, setup.cfg's package list, and a wheel installed into a
fresh virtual environment that captions from an empty folder with the released model and no network."""
import configparser
import os
import subprocess
import sys
import sysconfig

import numpy as np
import pytest
from PIL import Image

from scratchcap import __version__, cli
from scratchcap.weights import VGG16_WIDTHS, save_weights
from vgg_fixtures import random_layers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_setup_cfg_lists_every_package_and_maps_the_released_model():
    cfg = configparser.ConfigParser()
    cfg.read(os.path.join(ROOT, "setup.cfg"))
    listed = set(cfg["options"]["packages"].split())
    found = {os.path.relpath(d, ROOT).replace(os.sep, ".") for d, _, files in os.walk(os.path.join(ROOT, "scratchcap"))
             if "__init__.py" in files}
    assert listed == found | {"scratchcap.released"}
    assert cfg["options"]["package_dir"].split() == ["scratchcap.released", "=", "weights"]
    assert "flickr8k-*.h5" in cfg["options.package_data"]["scratchcap.released"]
    assert "released.json" in cfg["options.package_data"]["scratchcap.released"]


def test_help_lists_every_subcommand_and_version_prints(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("train", "caption", "evaluate", "features", "weights", "release", "serve"):
        assert f"  {name} " in out
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"scratchcap {__version__}"
    assert cli.main([]) == 2 and "usage: scratchcap" in capsys.readouterr().out
    assert cli.main(["paint"]) == 2 and "unknown command 'paint'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_each_subcommand_is_its_modules_main(name, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([name, "--help"])
    assert stop.value.code == 0
    assert f"python -m {cli.SUBCOMMANDS[name][0]}" in capsys.readouterr().out  # the module's own parser


def test_arguments_reach_the_module_untouched(monkeypatch):
    from scratchcap import caption

    seen = []
    monkeypatch.setattr(caption, "main", lambda argv: seen.append(argv) or 7)
    assert cli.main(["caption", "a.jpg", "--beam", "5", "--json"]) == 7
    assert seen == [["a.jpg", "--beam", "5", "--json"]]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A wheel built from this tree, installed into a fresh venv that sees this environment's dependencies."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp / "dist"),
                            ROOT], capture_output=True, text=True, timeout=600)
    if build.returncode != 0:
        pytest.fail("building the wheel failed:\n" + build.stderr[-3000:])
    (wheel,) = (tmp / "dist").glob("scratchcap-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-index", "--quiet", str(wheel)], capture_output=True, text=True, timeout=300)
    if install.returncode != 0 and "no such option: --python" in install.stderr:  # pip < 22.3
        install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
                                  "--target", site, str(wheel)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    # Only now may numpy, h5py, pillow... come from this environment, through a .pth line: written before the
    # install, it would show pip this environment's scratchcap as already installed.
    deps = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    with open(os.path.join(site, "test-deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    return venv, site


def test_the_installed_wheel_captions_from_an_empty_folder_with_the_released_model(installed, tmp_path):
    venv, site = installed
    assert os.path.exists(os.path.join(site, "scratchcap", "released", "flickr8k-lstm-attention.h5"))
    assert os.path.exists(os.path.join(site, "scratchcap", "released", "released.json"))
    assert not os.path.exists(os.path.join(site, "scratchcap", "released", "vgg16_imagenet.h5"))
    for name in ("index.html", "app.js", "style.css", "favicon.svg"):  # the page scratchcap serve serves
        assert os.path.exists(os.path.join(site, "scratchcap", "serve", "page", name)), name
    home = tmp_path / "home"  # the user cache, holding VGG-16 weights of the real shapes (random values)
    save_weights(home / "weights" / "vgg16_imagenet.h5", random_layers(1, widths=VGG16_WIDTHS),
                 preprocessing="caffe", source="test fixture", widths=VGG16_WIDTHS)
    empty = tmp_path / "empty"
    empty.mkdir()
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (180, 240, 3), dtype=np.uint8)).save(photo)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "SCRATCHCAP_HOME": str(home),
           "PIP_NO_INDEX": "1", "no_proxy": "*", "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}
    for command in ([str(venv / "bin" / "scratchcap"), "caption"], [str(venv / "bin" / "python"), "-I", "-m",
                                                                     "scratchcap.caption"]):
        proc = subprocess.run(command + [str(photo), "--json"], cwd=empty, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert '"caption"' in proc.stdout and "fetching" not in proc.stderr
        assert os.listdir(empty) == []  # nothing written where the user stands
    where = subprocess.run([str(venv / "bin" / "python"), "-I", "-c",
                            "import scratchcap, scratchcap.captioner as c; print(scratchcap.__file__); "
                            "print(c.released_checkpoint())"], cwd=empty, env=env, capture_output=True, text=True)
    lines = where.stdout.split()
    assert lines[0].startswith(site) and lines[1].startswith(os.path.join(site, "scratchcap", "released")), where


def test_the_installed_command_reports_its_version(installed, tmp_path):
    venv, _ = installed
    proc = subprocess.run([str(venv / "bin" / "scratchcap"), "--version"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == f"scratchcap {__version__}"
