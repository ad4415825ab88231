"""Progress bars: off with BADBLOCK_PROGRESS=0, on with 1, off when stderr is no terminal."""

from __future__ import annotations

from badblock.utils.progress import progress


def test_flag_turns_bars_on_and_off(monkeypatch):
    monkeypatch.setenv("BADBLOCK_PROGRESS", "1")
    bar = progress(range(3), desc="x")
    assert not bar.disable and list(bar) == [0, 1, 2]
    monkeypatch.setenv("BADBLOCK_PROGRESS", "0")
    bar = progress(total=5)
    assert bar.disable
    bar.close()


def test_no_terminal_means_no_bar(monkeypatch):
    monkeypatch.delenv("BADBLOCK_PROGRESS", raising=False)
    # pytest captures stderr: it is not a terminal here
    assert progress(total=2).disable
