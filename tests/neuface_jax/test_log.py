"""Tests of neuface_jax.common.log: one logging channel, progress lines when no terminal is attached."""

import logging

from neuface_jax.common import log as log_lib


def test_progress_logs_periodic_lines_and_the_last_state_once(caplog):
    with caplog.at_level(logging.INFO, logger="neuface_jax"):
        p = log_lib.Progress("fit", 4, unit="epoch", interval=0.0, bar=False)
        for _ in range(4):
            p.update()
        p.postfix("nme 3.1")
        p.close()
        p.close()  # idempotent
    lines = [r.getMessage() for r in caplog.records if r.name == "neuface_jax"]
    assert len(lines) == 5  # one per update (interval 0) and one closing line
    assert lines[0].startswith("fit: 1/4 epoch") and "left" in lines[0]
    assert lines[3].startswith("fit: 4/4 epoch") and "left" not in lines[3]
    assert lines[-1].endswith("; nme 3.1")  # the postfix changed the state: one closing line


def test_progress_close_does_not_repeat_an_unchanged_line(caplog):
    with caplog.at_level(logging.INFO, logger="neuface_jax"):
        with log_lib.Progress("render", interval=0.0, bar=False) as p:
            p.callback()(3, 3)
    lines = [r.getMessage() for r in caplog.records if r.name == "neuface_jax"]
    assert len(lines) == 1 and lines[0].startswith("render: 3/3 it")


def test_progress_is_rate_limited_and_quiet_prints_nothing(caplog):
    with caplog.at_level(logging.INFO, logger="neuface_jax"):
        p = log_lib.Progress("slow", 1000, interval=3600.0, bar=False)
        for _ in range(1000):
            p.update()
        p.close()
        q = log_lib.quiet("hidden", 5)
        q.update(5)
        q.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("neuface_jax")]
    assert len(lines) == 1 and lines[0].startswith("slow: 1000/1000")
    assert q.done == 5


def test_configure_attaches_one_stderr_handler(monkeypatch):
    root = logging.getLogger("neuface_jax")
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    log_lib.configure()
    log_lib.configure()
    assert len(root.handlers) == 1


def test_configure_prints_each_line_once_even_if_the_root_gets_a_handler(monkeypatch, capsys):
    root = logging.getLogger("neuface_jax")
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    log_lib.configure()
    logging.getLogger().addHandler(logging.StreamHandler())  # what a library's logging.info() call does
    logging.getLogger("neuface_jax.dataset.manifest").warning("once")
    assert capsys.readouterr().err.count("once") == 1
