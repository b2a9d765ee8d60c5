"""`rnnstream keygen`: CURVE certificate files, their modes, overwrite rules, and real use."""

from __future__ import annotations

import argparse
import stat
import sys

import pytest
import zmq.auth

from engine import ctl, keys
from engine.cli import UserError
from engine.model import Model
from engine.process import ServeProcess


def run_keygen(*argv: str) -> int:
    """Run `rnnstream keygen ARGV` in this process the way engine.cli does; return the exit code."""
    parser = argparse.ArgumentParser(prog="rnnstream keygen")
    keys.add_arguments(parser)
    try:
        return keys.run(parser.parse_args(list(argv)))
    except UserError as exc:
        print(f"rnnstream keygen: error: {exc}", file=sys.stderr)
        return 2


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_writes_server_and_client_certificates_with_private_secret_files(tmp_path, capsys):
    out = tmp_path / "certs"
    assert run_keygen("--out", str(out)) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["client.key", "client.key_secret", "server.key", "server.key_secret"]
    for name in ("server", "client"):
        public, secret = out / f"{name}.key", out / f"{name}.key_secret"
        assert mode(secret) == 0o600
        assert mode(public) == 0o644
        pub_key, no_secret = zmq.auth.load_certificate(public)
        pub_again, secret_key = zmq.auth.load_certificate(secret)
        assert no_secret is None and pub_key == pub_again
        assert zmq.curve_public(secret_key) == pub_key
    assert mode(out) == 0o700
    text = capsys.readouterr().out
    assert f"--curve-secret-key {out / 'server.key_secret'} --curve-clients {out}" in text
    assert (
        f"--server-public-key {out / 'server.key'} --client-secret-key {out / 'client.key_secret'}"
        in text
    )


def test_keygen_takes_repeated_names(tmp_path):
    assert run_keygen("--out", str(tmp_path), "--name", "daemon", "--name", "a", "--name", "b") == 0
    assert sorted(p.name for p in tmp_path.glob("*.key")) == ["a.key", "b.key", "daemon.key"]


def test_keygen_refuses_to_overwrite_without_force(tmp_path, capsys):
    assert run_keygen("--out", str(tmp_path), "--name", "server") == 0
    before = (tmp_path / "server.key_secret").read_bytes()
    capsys.readouterr()
    assert run_keygen("--out", str(tmp_path), "--name", "fresh", "--name", "server") == 2
    err = capsys.readouterr().err
    assert "server.key already exists; use --force" in err
    assert (tmp_path / "server.key_secret").read_bytes() == before
    assert not (tmp_path / "fresh.key").exists()  # nothing is written when one name clashes


def test_keygen_force_replaces_keys_and_keeps_secret_private(tmp_path):
    assert run_keygen("--out", str(tmp_path), "--name", "server") == 0
    secret = tmp_path / "server.key_secret"
    before = secret.read_bytes()
    secret.chmod(0o644)  # a loosened old file must not pass its mode on
    assert run_keygen("--out", str(tmp_path), "--name", "server", "--force") == 0
    assert secret.read_bytes() != before
    assert mode(secret) == 0o600


@pytest.mark.parametrize("bad", ["../escape", ".hidden", "a b", ""])
def test_keygen_rejects_names_that_are_not_plain_file_names(tmp_path, bad, capsys):
    assert run_keygen("--out", str(tmp_path), "--name", bad) == 2
    assert "certificate name" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_keygen_rejects_the_same_name_twice(tmp_path, capsys):
    assert run_keygen("--out", str(tmp_path), "--name", "x", "--name", "x") == 2
    assert "must differ" in capsys.readouterr().err


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_keygen_out_that_is_a_file_says_it_is_not_a_folder(tmp_path, capsys, force):
    a_file = tmp_path / "uni.csv"
    a_file.write_text("timestamp,value\n")
    assert run_keygen("--out", str(a_file), "--name", "x", *force) == 2
    assert f"{a_file} is a file, not a folder; give --out a folder" in capsys.readouterr().err
    assert a_file.read_text() == "timestamp,value\n"


def daemon_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("daemon"))


def test_keygen_first_name_of_a_new_folder_is_the_daemons(tmp_path, capsys):
    assert run_keygen("--out", str(tmp_path), "--name", "daemon", "--name", "a") == 0
    text = capsys.readouterr().out
    assert f"--curve-secret-key {tmp_path / 'daemon.key_secret'} " in daemon_line(text)
    assert f"--server-public-key {tmp_path / 'daemon.key'} " in text


def test_keygen_names_added_to_a_folder_are_clients_of_its_server(tmp_path, capsys):
    assert run_keygen("--out", str(tmp_path)) == 0
    capsys.readouterr()
    assert run_keygen("--out", str(tmp_path), "--name", "newclient") == 0
    text = capsys.readouterr().out
    assert f"--curve-secret-key {tmp_path / 'server.key_secret'} " in daemon_line(text)
    assert "restart it to admit newclient" in text
    assert (
        f"--server-public-key {tmp_path / 'server.key'} "
        f"--client-secret-key {tmp_path / 'newclient.key_secret'}"
    ) in text
    assert "newclient.key_secret --curve-clients" not in text
    # "server" is the daemon's wherever it comes in the names
    assert run_keygen("--out", str(tmp_path / "b"), "--name", "ops", "--name", "server") == 0
    assert f"{tmp_path / 'b' / 'server.key_secret'}" in daemon_line(capsys.readouterr().out)


def test_keygen_names_the_daemon_of_a_folder_without_server_only_when_told(tmp_path, capsys):
    assert run_keygen("--out", str(tmp_path), "--name", "daemon", "--name", "a") == 0
    capsys.readouterr()
    assert run_keygen("--out", str(tmp_path), "--name", "b") == 0
    text = capsys.readouterr().out
    assert daemon_line(text).startswith("daemon: b is a client; ")
    assert "--curve-secret-key" not in text and "b.key_secret --curve-clients" not in text
    assert f"--server-public-key {tmp_path / 'DAEMON.key'} " in text
    assert run_keygen("--out", str(tmp_path), "--name", "c", "--server", "daemon") == 0
    text = capsys.readouterr().out
    assert f"--curve-secret-key {tmp_path / 'daemon.key_secret'} " in daemon_line(text)
    assert f"--server-public-key {tmp_path / 'daemon.key'} " in text
    assert run_keygen("--out", str(tmp_path), "--name", "d", "--server", "nope") == 2
    assert "--server nope: no nope.key in" in capsys.readouterr().err
    assert not (tmp_path / "d.key").exists()


def test_generated_keys_secure_a_real_daemon_and_ctl(tmp_path):
    certs = tmp_path / "certs"
    keys.generate(certs, ["server", "client"])
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes((certs / "client.key").read_bytes())
    model = tmp_path / "m.npz"
    Model.random("gru", 2, 4, seed=0).save(model)
    server = ServeProcess(
        model,
        tmp_path,
        extra=[
            "--curve-secret-key",
            str(certs / "server.key_secret"),
            "--curve-clients",
            str(allowed),
        ],
    ).start()
    try:
        reply = ctl.control(
            server.control,
            "health",
            server_public_key=str(certs / "server.key"),
            client_secret_key=str(certs / "client.key_secret"),
        )
        assert reply["ok"] and reply["status"] == "ready"
        # The secret key as bare Z85 text works too: the public half is derived from it.
        _, secret = zmq.auth.load_certificate(certs / "client.key_secret")
        reply = ctl.control(
            server.control,
            "health",
            server_public_key=str(certs / "server.key"),
            client_secret_key=secret.decode(),
        )
        assert reply["ok"]
        # A key pair the daemon does not know is refused: no reply.
        with pytest.raises(ctl.NoReply):
            ctl.control(
                server.control, "health", timeout=0.5, server_public_key=str(certs / "server.key")
            )
        # So is a plain-text client.
        with pytest.raises(ctl.NoReply):
            ctl.control(server.control, "health", timeout=0.5)
    finally:
        server.stop()
