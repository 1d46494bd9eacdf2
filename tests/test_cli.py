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
