"""Why a client's connection to the daemon gets nowhere, told by the socket's monitor.

ZeroMQ connects in the background: a PUSH queues, a SUB waits, a REQ times out, whether nothing
listens, the daemon refused the client's CURVE key or another kind of socket answered. The
socket's monitor sees which. `ConnectionWatch` follows one client socket's connection events and
says in one sentence what stands in the way; producers, subscribers and `rnnstream ctl` all ask
it, so each says the same thing about the same trouble.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import recv_monitor_message

# Only the making and losing of connections: no event comes per message, so a watched socket
# sends and receives exactly as fast as an unwatched one. Events wait in the monitor's queue
# until asked for (past its high-water mark of 1000 the newest are dropped); libzmq gives up on
# a connection whose key was refused or whose mechanism does not match, and retries others
# every reconnect interval, so even a long-lived client leaves few.
_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


@dataclass(frozen=True)
class ConnectionProblem:
    """What keeps a client's messages from the daemon, as one sentence in `reason`.

    `handshake_failed` is true when something took the connection and the handshake failed (the
    daemon refused the CURVE key, CURVE on one side only, another kind of socket): that lasts
    until the keys or the endpoint change. `hung_up` is true when a connection got through and
    was lost since, so messages sent before may well have arrived. Otherwise nothing took the
    connection yet, which a daemon that starts mends.
    """

    reason: str
    handshake_failed: bool = False
    hung_up: bool = False

    def __str__(self) -> str:
        return self.reason


class ConnectionWatch:
    """Follow the connection events of `socket`, a client of the daemon's `role` socket.

    `role` is "ingest", "publish" or "control"; `curve` says whether `socket` uses CURVE. Make
    the watch before `socket` connects, and `close` it before closing `socket`.
    """

    def __init__(self, socket: zmq.Socket, role: str, *, curve: bool) -> None:
        self._socket = socket
        self._role = role
        self._curve = curve
        self._monitor = socket.get_monitor_socket(_EVENTS)
        self._through = False  # the last handshake succeeded and its connection is up
        self._hung_up = False  # a connection that got through was lost, none got through since
        self._accepted = False  # something took a connection since the last one got through
        self._failures: dict[int, int] = {}  # failed handshakes since then: event -> value

    def problem(self, wait: float = 0.0) -> ConnectionProblem | None:
        """Return what stands in the way, or None when the connection got through and is up.

        With `wait` > 0 and no connection through yet, wait up to that many seconds for one to
        get through or for a handshake to fail.
        """
        deadline = time.monotonic() + wait
        while True:
            self._read()
            problem = self._problem()
            left = deadline - time.monotonic()
            if problem is None or problem.handshake_failed or problem.hung_up or left <= 0:
                return problem
            self._monitor.poll(max(1, int(left * 1000)))

    def close(self) -> None:
        """Stop watching (before `socket` closes: turning its monitor off needs it open)."""
        if self._monitor.closed:
            return
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._monitor.close(linger=0)

    def _read(self) -> None:
        while self._monitor.poll(0):
            message = recv_monitor_message(self._monitor)
            event = message["event"]
            if event == zmq.EVENT_CONNECTED:
                self._accepted = True
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._through, self._hung_up, self._accepted = True, False, False
                self._failures.clear()
            elif event == zmq.EVENT_DISCONNECTED:
                self._hung_up = self._hung_up or self._through
                self._through = False
            else:
                self._through = False
                self._failures[event] = message["value"]

    def _problem(self) -> ConnectionProblem | None:
        if self._through:
            return None
        if self._failures:
            return ConnectionProblem(self._failed_handshake(), handshake_failed=True)
        if self._hung_up:
            return ConnectionProblem(
                "the daemon hung up and has not taken the connection back: did rnnstream serve "
                "stop?",
                hung_up=True,
            )
        if self._accepted:  # a socket of another kind may hang up without a word
            return ConnectionProblem(
                "something accepted the connection but no handshake followed: is --endpoint the "
                f"daemon's {self._role} socket?"
            )
        return ConnectionProblem("nothing accepted the connection: is rnnstream serve running?")

    def _failed_handshake(self) -> str:
        failures = self._failures
        if zmq.EVENT_HANDSHAKE_FAILED_AUTH in failures:
            # the daemon's authenticator said no: this client's public key is not in its folder
            return (
                "the daemon refused this client's CURVE key: give --client-secret-key a key "
                "whose public half is in the daemon's --curve-clients folder"
            )
        mismatch = zmq.PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH
        if failures.get(zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL) == mismatch:
            if self._curve:
                return "the daemon does not use CURVE: leave out --server-public-key"
            return "the daemon uses CURVE: give --server-public-key (and --client-secret-key)"
        # Otherwise a failed handshake does not say why: a CURVE server cannot open a HELLO
        # sealed for another key and just hangs up, and which side sees a mechanism mismatch is
        # a race.
        if self._curve:
            return (
                f"the CURVE handshake failed: is --endpoint the {self._role} socket of a daemon "
                "with CURVE, and --server-public-key its public key?"
            )
        return (
            f"the handshake failed: is --endpoint the daemon's {self._role} socket? (one with "
            "CURVE needs --server-public-key)"
        )
