"""The ``relay`` entry point with the tool commands: help texts and configuration needs."""

from __future__ import annotations

import pytest

from relay.cli import main


@pytest.mark.parametrize("command", ["send", "tail", "subscribe", "verify"])
def test_help_documents_exit_status(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])

    output = capsys.readouterr().out
    assert exit_info.value.code == 0
    assert f"usage: relay {command}" in output
    assert "exit status:\n  0  " in output
    assert "\n  2  invalid arguments" in output


def test_top_level_help_lists_tools(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])

    output = capsys.readouterr().out
    for command in ("serve", "check-config", "send", "tail", "subscribe", "verify"):
        assert command in output


def test_check_config_still_needs_config(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)

    status = main(["check-config"])

    assert status == 2
    assert "config/relay.yaml: cannot read the configuration file" in capsys.readouterr().err
