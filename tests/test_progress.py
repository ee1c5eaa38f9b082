"""Progress bars: tqdm's count, rate and ETA when on; nothing, and no tqdm import, when off."""
import sys

from scratchcap.data.shapes import generate_shapes
from scratchcap.progress import progress_bar


def test_a_bar_shows_count_and_rate_on_stderr(capsys):
    bar = progress_bar(4, "work", "img", initial=1)
    bar.update(3)
    bar.set_postfix(loss="0.5")
    bar.close()
    err = capsys.readouterr().err
    assert "work" in err and "4/4" in err and "img/s" in err and "loss=0.5" in err


def test_a_silent_bar_prints_nothing_and_needs_no_tqdm(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tqdm", None)  # importing tqdm now raises ImportError
    bar = progress_bar(4, "work", "img", enabled=False)
    bar.update(2)
    bar.set_postfix(loss="0.5")
    bar.close()
    assert capsys.readouterr() == ("", "")


def test_shapes_generation_reports_progress_only_when_asked(tmp_path, capsys):
    generate_shapes(tmp_path / "on", 2, 1, 1, size=32, progress=True)
    assert "generating shapes" in capsys.readouterr().err
    generate_shapes(tmp_path / "off", 2, 1, 1, size=32, progress=False)
    assert "generating shapes" not in capsys.readouterr().err
