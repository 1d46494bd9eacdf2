"""The `dsah` command refuses bad numbers before any work: argparse's usage line and one error line naming
the option, the value and what is allowed, exit status 2 (never a traceback)."""

import pytest

from dsah.cli import main


@pytest.mark.parametrize("argv, message", [
    (["search", "-k", "-5", "q.jpg"], "argument -k: -5 is out of range; allowed: an integer >= 1"),
    (["search", "-k", "0", "q.jpg"], "argument -k: 0 is out of range; allowed: an integer >= 1"),
    (["search", "-k", "ten", "q.jpg"], "argument -k: 'ten' is not an integer >= 1"),
    (["search", "--max-pixels", "0", "q.jpg"], "argument --max-pixels: 0 is out of range"),
    (["add", "--max-pixels", "-1", "q.jpg"], "argument --max-pixels: -1 is out of range"),
    (["serve", "--port", "70000"], "argument --port: 70000 is out of range; allowed: an integer from 0 to 65535"),
    (["serve", "--port", "-1"], "argument --port: -1 is out of range"),
    (["serve", "--threads", "0"], "argument --threads: 0 is out of range; allowed: an integer >= 1"),
    (["serve", "--backlog", "0"], "argument --backlog: 0 is out of range"),
    (["serve", "--max-upload", "-3"], "argument --max-upload: -3 is out of range"),
    (["serve", "--timeout", "0"], "argument --timeout: 0 is out of range; allowed: a number above 0 and at most 3600"),
    (["serve", "--timeout", "nan"], "argument --timeout: nan is out of range"),
])
def test_bad_numbers_are_refused_with_the_option_named(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"dsah {argv[0]}: error: {message}")


def test_an_error_gets_a_line_of_its_own_after_the_progress_bar_it_interrupted(tmp_path):
    """A stage that fails mid-way through a progress bar prints its error after the bar, on its own line,
    and nothing after it (an open bar used to be finished after the message, at exit)."""
    import subprocess
    import sys

    script = tmp_path / "stage.py"
    script.write_text(
        "from tqdm.auto import tqdm\n"
        "from dsah.errors import DataError, exit_on_error\n"
        "@exit_on_error('images')\n"
        "def main():\n"
        "    bar = tqdm(total=100, desc='images 64px')\n"
        "    for i in range(100):\n"
        "        bar.update(1)\n"
        "        if i == 40:\n"
        "            raise DataError('photos/p1.jpg: truncated')\n"
        "main()\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.endswith("\nimages: error: photos/p1.jpg: truncated\n"), repr(done.stderr)
    assert "41/100" in done.stderr.rsplit("\n", 2)[0]  # the bar was finished first, where it stood


def test_ctrl_c_is_one_line_and_the_process_ends_by_sigint(tmp_path):
    """Interrupted, a stage says so in one line (what is kept, where it says) with no traceback, and dies
    by SIGINT, so DVC and the shell see an interruption rather than an error."""
    import signal
    import subprocess
    import sys

    script = tmp_path / "stage.py"
    script.write_text(
        "import signal, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the test runner set\n"
        "from tqdm.auto import tqdm\n"
        "from dsah.errors import exit_on_error\n"
        "@exit_on_error('train', interrupted='the last checkpoint is kept')\n"
        "def main():\n"
        "    for step in tqdm(range(1000), desc='train'):\n"
        "        print('ready' if step == 1 else '', end='', flush=True)  # the bar is drawn\n"
        "        time.sleep(0.05)\n"
        "main()\n")
    process = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    assert process.stdout.read(5) == "ready"
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == -signal.SIGINT
    assert "Traceback" not in stderr
    assert stderr.endswith("\ntrain: interrupted; the last checkpoint is kept\n"), repr(stderr[-300:])
