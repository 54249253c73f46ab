"""The shared progress bar: silent when asked, and not flooding logs when stderr is not a terminal."""
import pybridge.train._toolkit as tk


def test_progress_is_silent_without_verbose(capsys):
    bar = tk.progress(50, False, "demo")
    for _ in range(50):
        bar.update(1)
    bar.close()
    assert capsys.readouterr().err == ""


def test_progress_redraws_rarely_into_a_log(capsys):
    # capsys replaces stderr with a non-terminal stream, as a log file, CI or R's console does
    bar = tk.progress(500, True, "demo")
    assert bar.mininterval == tk.QUIET_REDRAW_S
    for i in range(500):
        bar.update(1)
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")  # the training loops set a postfix every epoch
    bar.close()
    assert 1 <= capsys.readouterr().err.count("demo") <= 3  # first draw, maybe one more, the final state


def test_progress_redraws_often_on_a_terminal(monkeypatch):
    monkeypatch.setattr(tk, "_stderr_is_terminal", lambda: True)
    bar = tk.progress(5, True, "demo")
    assert bar.mininterval == 0.1
    bar.close()
