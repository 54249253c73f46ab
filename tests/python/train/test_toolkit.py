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


class _Terminal:
    def isatty(self):
        return True

    def write(self, text):
        pass

    def flush(self):
        pass


def test_progress_redraws_often_on_a_terminal_or_in_a_notebook(monkeypatch):
    with monkeypatch.context() as m:
        m.setattr(tk.sys, "stderr", _Terminal())
        bar = tk.progress(5, True, "demo")
        assert bar.mininterval == 0.1
        bar.close()
    monkeypatch.setattr(tk.tqdm, "__module__", "tqdm.notebook")  # what tqdm.auto picks in Jupyter (stderr is no terminal there)
    assert tk._redraws_in_place()
