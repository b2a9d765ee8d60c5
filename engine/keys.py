"""ZeroMQ CURVE keys: `rnnstream keygen` certificates, and the client side of every connection.

Each NAME gets `NAME.key` (public key, safe to share) and `NAME.key_secret` (both keys, mode
0600, keep it private). The printed instructions name the daemon's certificate as
`daemon_name` decides: `--server NAME`, else `server`, else the first name of a new folder; a
name added to a folder that already has certificates is a client.
Producers, subscribers and `rnnstream ctl` all connect through `apply_curve_client`, and their
command lines take the same `add_curve_client_arguments` options.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import zmq
import zmq.auth

from engine import protocol

DEFAULT_NAMES = ("server", "client")
DEFAULT_SERVER = "server"
_SUFFIXES = (".key", ".key_secret")
_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")

KeyLike = str | bytes | os.PathLike


def apply_curve_client(
    socket: zmq.Socket,
    server_public_key: KeyLike | None,
    client_public_key: KeyLike | None = None,
    client_secret_key: KeyLike | None = None,
) -> None:
    """Make `socket` a CURVE client of a server with `server_public_key` (no-op when None).

    Keys are 40-character Z85 text/bytes or ZeroMQ certificate files. Without a client key pair an
    ephemeral one is generated, which suits a server that authenticates nobody by key. A client
    certificate file (`*.key_secret`) or Z85 secret text may be given as `client_secret_key` alone:
    the public key is derived from it.
    """
    if server_public_key is None:
        if client_public_key is not None or client_secret_key is not None:
            raise ValueError("client CURVE keys need the server's public key as well")
        return
    if client_secret_key is None:
        if client_public_key is not None:
            raise ValueError("a client public key needs its secret key")
        public, secret = zmq.curve_keypair()
    else:
        secret = protocol.curve_key(client_secret_key, secret=True)
        # derived, not read: Z85 secret text alone carries no public key
        public = (
            zmq.curve_public(secret)
            if client_public_key is None
            else protocol.curve_key(client_public_key)
        )
    socket.curve_serverkey = protocol.curve_key(server_public_key)
    socket.curve_publickey = public
    socket.curve_secretkey = secret


def add_curve_client_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the CURVE options of a command-line client (`apply_curve_client` takes them)."""
    parser.add_argument(
        "--server-public-key",
        default=None,
        help="CURVE: the daemon's public key (Z85 text or certificate file); enables encryption",
    )
    parser.add_argument(
        "--client-secret-key",
        default=None,
        help="CURVE: this client's secret certificate file (NAME.key_secret from rnnstream "
        "keygen), for a daemon that admits only known clients; default: a throwaway key pair",
    )


def certificate_paths(out: Path, name: str) -> tuple[Path, Path]:
    """Return (public, secret) certificate paths of `name` in `out`."""
    return out / f"{name}.key", out / f"{name}.key_secret"


def generate(out: str | os.PathLike, names: list[str], *, force: bool = False) -> list[Path]:
    """Write a CURVE certificate pair per name into `out` and return the files written.

    Create `out` (mode 0700) when missing. Raise `FileExistsError` naming the first existing
    file unless `force`, before writing anything; raise `ValueError` for an unusable name or
    when `out` is a file.
    """
    folder = Path(out)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file, not a folder; give --out a folder for certificates")
    if not names:
        raise ValueError("give at least one name")
    for name in names:
        if not name or name.startswith(".") or not set(name) <= _NAME_CHARS:
            raise ValueError(
                f"certificate name {name!r} must be letters, digits, '-', '_' or '.', "
                "not starting with '.'"
            )
    if len(set(names)) != len(names):
        raise ValueError("certificate names must differ")
    if not force:
        for name in names:
            for path in certificate_paths(folder, name):
                if path.exists():
                    raise FileExistsError(str(path))
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        public, secret = certificate_paths(folder, name)
        # Remove old files first: create_certificates opens with the umask's mode, and an
        # existing secret file would keep whatever mode it had.
        for path in (public, secret):
            path.unlink(missing_ok=True)
        old_umask = os.umask(0o077)
        try:
            zmq.auth.create_certificates(folder, name)
        finally:
            os.umask(old_umask)
        secret.chmod(0o600)
        public.chmod(0o644)
        written += [public, secret]
    return written


def existing_names(out: str | os.PathLike) -> set[str]:
    """Return the names that have a certificate (`NAME.key` or `NAME.key_secret`) in `out`."""
    folder = Path(out)
    if not folder.is_dir():
        return set()
    return {p.name.rsplit(".", 1)[0] for p in folder.glob("*.key*") if p.suffix in _SUFFIXES}


def daemon_name(names: list[str], existing: set[str], server: str | None = None) -> str | None:
    """Return which certificate is the daemon's, or None when nothing says.

    `names` are the certificates being made, `existing` those the folder held before. The
    daemon's is `server` when given; else "server" (DEFAULT_SERVER) when it is being made or is
    already there; else, in a folder that held no certificate, the first name. Names added to a
    folder that already has certificates are otherwise clients.
    """
    if server is not None:
        return server
    if DEFAULT_SERVER in names or DEFAULT_SERVER in existing:
        return DEFAULT_SERVER
    if not existing:
        return names[0]
    return None


def usage_text(out: Path, names: list[str], server: str | None) -> str:
    """Return instructions for using the certificates with serve, ctl, producers and consumers.

    `names` are the certificates just made; `server` is the daemon's certificate (one of them or
    one already in `out`), or None when unknown (see `daemon_name`).
    """
    q = shlex.quote
    clients = [name for name in names if name != server]
    if server is None:
        server_public = out / "DAEMON.key"
        lines = [
            f"daemon: {', '.join(names)} {'is a client' if len(names) == 1 else 'are clients'}; "
            f"{out} has no server.key, so DAEMON.key below stands for the daemon's public key "
            "(rerun with --server NAME to name it)",
        ]
    else:
        server_public, server_secret = certificate_paths(out, server)
        lines = [
            f"daemon ({server}): rnnstream serve --curve-secret-key {q(str(server_secret))} "
            f"--curve-clients {q(str(out))}",
        ]
    lines.append(
        f"  (--curve-clients allows every public NAME.key in {out}; keep only allowed clients' "
        "public keys there, or point it at a folder holding just those)"
    )
    if server not in names:
        lines.append(
            "  a running daemon reads --curve-clients when it starts: restart it to admit "
            f"{', '.join(clients)}"
        )
    if clients:
        _, client_secret = certificate_paths(out, clients[0])
        lines += [
            f"clients: give the daemon's public key {server_public} and a client's secret "
            "certificate, e.g.",
            f"  rnnstream ctl --server-public-key {q(str(server_public))} "
            f"--client-secret-key {q(str(client_secret))} health",
            f"  Producer(..., server_public_key={str(server_public)!r}, "
            f"client_secret_key={str(client_secret)!r})",
            f"  Subscriber(..., server_public_key={str(server_public)!r}, "
            f"client_secret_key={str(client_secret)!r})",
        ]
    else:
        lines.append(f"clients: give the daemon's public key {server_public}")
    lines.append("Keep the *.key_secret files private (mode 0600); share only *.key files.")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR", help="folder to write certificates to"
    )
    parser.add_argument(
        "--name",
        action="append",
        dest="names",
        metavar="NAME",
        help=f"certificate to create (repeat for more) (default: {' and '.join(DEFAULT_NAMES)})",
    )
    parser.add_argument(
        "--server",
        metavar="NAME",
        default=None,
        help="the daemon's certificate, for the printed instructions: one of the names or one "
        f"already in --out (default: {DEFAULT_SERVER!r} if made now or already there, else the "
        "first name when --out holds no certificate yet; names added to a folder of "
        "certificates are clients)",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing certificate files")


def run(args: argparse.Namespace) -> int:
    from engine.cli import UserError

    names = list(args.names or DEFAULT_NAMES)
    existing = existing_names(args.out)
    server = daemon_name(names, existing, args.server)
    if server is not None and server not in names and server not in existing:
        raise UserError(
            f"--server {server}: no {server}.key in {args.out} and not among the names to "
            "create; give one of them"
        )
    try:
        written = generate(args.out, names, force=args.force)
    except FileExistsError as exc:
        raise UserError(f"{exc} already exists; use --force to overwrite it") from None
    except ValueError as exc:
        raise UserError(str(exc)) from None
    except OSError as exc:
        raise UserError(f"cannot write certificates to {args.out}: {exc.strerror}") from None
    for path in written:
        print(f"wrote {path}")
    print(usage_text(Path(args.out), names, server))
    return 0
