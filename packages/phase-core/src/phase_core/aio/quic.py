"""The QUIC/Noise transport: a thin asyncio adapter over aioquic (docs/transport.md).

The only module that imports aioquic. It reaches into aioquic's private state
in five places, all pinned to the tested version range in phase-core's
pyproject and covered by tests:

1. ``tls._request_client_certificate`` on the server, so the client presents
   its certificate and the prologue can bind both (no public option exists);
2. ``tls._peer_certificate``, the peer's certificate (no public accessor);
3. the stream and connection flow-control windows: aioquic grows them as data
   *arrives*; we grant credit as the application *reads*, so a peer can never
   make us buffer more than the windows in ``Limits``;
4. the sender's buffered byte count, so that a writer waits (and finally drops
   the connection) when the peer stops reading;
5. the 1-RTT space's ACK timer and delay: when application data is sent, a
   pending (delayed) ACK is sent in the same packet rather than in one of its
   own; once authenticated, an ACK waits up to ``ACK_DELAY_S`` for data to ride
   on, or until ``ACK_EVERY`` datagrams arrived unacknowledged.

Everything else is plumbing: the decisions live in ``protocol.noise`` (who
the peer is), ``protocol.framing`` (what it sent) and ``aio.endpoint`` (which
connections and streams are admitted); ``aio.channel`` holds one stream's bytes.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ipaddress
import socket
import ssl
from collections import Counter
from collections.abc import Callable
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection, QuicConnectionState
from aioquic.tls import Epoch

from phase_core import log
from phase_core.aio import certs
from phase_core.aio.channel import QuicChannel as _Channel
from phase_core.aio.endpoint import Endpoint as _Endpoint
from phase_core.aio.endpoint import Handler as Handler
from phase_core.aio.endpoint import Priority as Priority
from phase_core.aio.stream import Limits, Stream
from phase_core.errors import (
    PhaseError,
    ProtocolViolation,
    TempFailure,
    Timeout,
    Unavailable,
)
from phase_core.identity import Identity
from phase_core.protocol import noise

ALPN = "phase/1"
SERVER_NAME = certs.SUBJECT

# application error codes (CONNECTION_CLOSE and RESET_STREAM / STOP_SENDING)
E_OK = 0x0
E_PROTOCOL = 0x1  # the peer broke the protocol (bad frame, oversize, garbage)
E_AUTH = 0x2  # the Noise handshake failed or the peer is not who we expected
E_LIMIT = 0x3  # over a connection limit
E_TIMEOUT = 0x4  # handshake timeout, or the peer stopped reading
E_INTERNAL = 0x5
S_REFUSED = 0x10  # stream refused: busy, or no handler
S_CANCELLED = 0x11  # stream aborted by the application
S_ERROR = 0x12  # the handler failed

# An ACK with nothing to ride on waits this long (aioquic: 1 ms; we advertise the
# default max_ack_delay of 25 ms, so the peer's loss timers allow for it) ...
ACK_DELAY_S = 0.02
# ... or until this many datagrams arrived since the last ACK, so that bulk
# transfers keep their ACK clock (RFC 9000 section 13.2.2 suggests one ACK per two
# packets; fewer ACKs slow the sender's window growth a little, on any path).
ACK_EVERY = 10

def _quic_config(ep: _Endpoint, is_client: bool) -> Any:
    lim = ep.limits
    cfg = QuicConfiguration(is_client=is_client, alpn_protocols=[ALPN],
                            idle_timeout=lim.idle_timeout_s,
                            max_data=min(lim.handshake_window_bytes, lim.connection_window_bytes),
                            max_stream_data=lim.stream_window_bytes,
                            verify_mode=ssl.CERT_NONE)
    cfg.certificate = ep.cert.certificate
    cfg.private_key = ep.cert.private_key
    if is_client:
        cfg.server_name = SERVER_NAME
    return cfg


class _PhaseProtocol(QuicConnectionProtocol):
    """One QUIC connection: TLS, then Noise on stream 0, then framed streams."""

    def __init__(self, quic: Any, endpoint: _Endpoint, is_client: bool,
                 expected_peer: str | None = None, addr: Any = None) -> None:
        super().__init__(quic)
        self.endpoint = endpoint
        self.is_client = is_client
        self.expected_peer = expected_peer
        self.addr = addr
        self.peer_id: str | None = None
        self.error: PhaseError | None = None
        self._loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[str] = self._loop.create_future()
        self._hs: noise.Handshake | None = None
        self._hs_stream: int | None = None
        self._channels: dict[int, _Channel] = {}
        self._pending: list[_Channel] = []  # peer streams that arrived before authentication
        self._logged = False
        self._violated = False
        self._hs_fin = False
        self._ack_now = False  # application data is queued: send pending ACKs with it
        self._unacked = 0  # datagrams received since our last ACK (1-RTT, authenticated)
        self.closing = False
        self._early = bytearray()  # stream 0 bytes that beat the TLS completion event
        self._consumed_total = 0
        # writers waiting for room: (their condition, their future), woken when it holds
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._serving: dict[int, str] = {}  # stream id → peer, while counted as handled
        self._finished: collections.OrderedDict[int, None] = collections.OrderedDict()
        self._keepalive: asyncio.TimerHandle | None = None
        self._authed = False
        self._conn_window = min(endpoint.limits.handshake_window_bytes,  # MAX_DATA we grant
                                endpoint.limits.connection_window_bytes)
        self._counted = False  # this drop is already counted (eviction)
        self.priority = True  # set on authentication (server side)
        lim = endpoint.limits
        self._refuse = not endpoint.admit(self)
        endpoint.stats["connections_opened"] += 1
        self._hs_timer: asyncio.TimerHandle | None = self._loop.call_later(
            lim.handshake_timeout_s, self._handshake_timed_out)
        # private aioquic state, see the module docstring
        quic._local_max_streams_bidi.value = lim.max_streams_per_connection
        quic._local_max_streams_bidi.sent = lim.max_streams_per_connection
        quic._local_max_streams_uni.value = 0
        quic._local_max_streams_uni.sent = 0
        orig_stream_limits = quic._write_stream_limits
        orig_conn_limits = quic._write_connection_limits
        orig_initialize = quic._initialize

        # The windows grow where the application reads (``credit``); these two run for
        # every packet built (the stream one for every stream): nothing to send, no work.
        def write_stream_limits(builder: Any, space: Any, stream: Any) -> None:
            if stream.max_stream_data_local_sent == stream.max_stream_data_local:
                return
            saved = stream.receiver.highest_offset
            stream.receiver.highest_offset = 0  # disables aioquic's arrival-driven doubling
            try:
                orig_stream_limits(builder=builder, space=space, stream=stream)
            finally:
                stream.receiver.highest_offset = saved

        max_data, bidi = quic._local_max_data, quic._local_max_streams_bidi

        def write_connection_limits(builder: Any, space: Any) -> None:
            if max_data.sent == max_data.value and bidi.sent == bidi.value:
                return  # (no unidirectional streams are ever granted)
            saved = max_data.used
            max_data.used = 0  # likewise
            try:
                orig_conn_limits(builder=builder, space=space)
            finally:
                max_data.used = saved

        def initialize(peer_cid: bytes) -> None:
            orig_initialize(peer_cid)
            if not is_client:
                quic.tls._request_client_certificate = True

        quic._write_stream_limits = write_stream_limits
        quic._write_connection_limits = write_connection_limits
        quic._initialize = initialize

    # -- aioquic entry points: nothing may escape from here ---------------------

    def datagram_received(self, data: bytes | str, addr: Any) -> None:
        self._unacked += 1
        if self.addr is None:
            self.addr = addr
            if not self.is_client:
                self.endpoint.sourced(self, str(addr[0]))
        try:
            super().datagram_received(data, addr)
        except Exception as e:  # pragma: no cover - aioquic bug or ours
            self._internal(e)
        if self._refuse:
            self._refuse = False
            self._counted = True
            self.endpoint.stats["refused_busy"] += 1
            if not self.is_client:
                self.endpoint.summarize("refused_busy")
            self._close(E_LIMIT, "too many connections")
        elif (not self.is_client and self.peer_id is not None
              and self._quic._state is QuicConnectionState.DRAINING):
            # the peer said goodbye: aioquic reports the end only after its draining
            # period (three probe timeouts), but the peer's share of connections is
            # free now, so its next connection is not refused as one too many
            self.endpoint.leaving(self)
        self._wake_writers()

    def error_received(self, exc: Exception) -> None:
        """An ICMP error on our (connected, client) socket: nobody listens there."""
        if self.is_client and not self.ready.done() and isinstance(exc, ConnectionRefusedError):
            self.endpoint.stats["refused_unreachable"] += 1
            err = Unavailable("nothing is listening at that address (port unreachable)",
                              slug="unreachable")
            self.error = err
            self.ready.set_exception(err)
            self.ready.exception()
            self._close(E_TIMEOUT, "unreachable")

    def transmit(self) -> None:
        """Send what is queued. When application data goes out, an ACK that aioquic
        would delay (by up to 1 ms, then send in a packet of its own) rides along."""
        space = self._quic._spaces.get(Epoch.ONE_RTT)
        if space is not None and space.ack_at is not None and (
                self._ack_now or self._unacked >= ACK_EVERY):
            space.ack_at = self._loop.time()
        self._ack_now = False
        super().transmit()
        if space is not None and space.ack_at is None:
            self._unacked = 0

    def _send_soon(self) -> None:
        self._ack_now = True
        self._transmit_soon()

    def _handle_timer(self) -> None:
        try:
            super()._handle_timer()
        except Exception as e:  # pragma: no cover
            self._internal(e)
        self._wake_writers()

    def quic_event_received(self, event: Any) -> None:
        try:
            self._on_event(event)
        except PhaseError as e:
            if isinstance(e, ProtocolViolation) or not self.ready.done():
                self.violation(e)
            else:  # pragma: no cover
                self._internal(e)
        except Exception as e:  # pragma: no cover
            self._internal(e)

    # -- events --------------------------------------------------------------

    def _on_event(self, event: Any) -> None:
        if isinstance(event, events.StreamDataReceived):
            self._on_stream_data(event.stream_id, event.data, event.end_stream)
        elif isinstance(event, events.HandshakeCompleted):
            self._on_tls_done(event.alpn_protocol)
        elif isinstance(event, events.StreamReset):
            ch = self._channels.pop(event.stream_id, None)
            if ch is not None:
                ch.fail(Unavailable(f"the peer reset the stream (code {event.error_code})",
                                    slug="stream_reset"))
            if event.stream_id == self._hs_stream and not self.ready.done():
                raise ProtocolViolation("the peer reset the handshake stream",
                                        slug="handshake_failed")
        elif isinstance(event, events.StopSendingReceived):
            ch = self._channels.get(event.stream_id)
            if ch is not None:
                ch.fail(Unavailable("the peer stopped reading the stream", slug="stream_reset"))
            self._quic.reset_stream(event.stream_id, S_CANCELLED)
        elif isinstance(event, events.ConnectionTerminated):
            self._on_terminated(event)

    def _on_tls_done(self, alpn: str | None) -> None:
        if alpn != ALPN:
            raise ProtocolViolation(f"the peer negotiated ALPN {alpn!r}, not {ALPN}")
        peer_cert = getattr(self._quic.tls, "_peer_certificate", None)
        if peer_cert is None:
            raise ProtocolViolation("the peer presented no TLS certificate",
                                    slug="handshake_failed")
        own, peer = self.endpoint.cert.der, certs.der_of(peer_cert)
        pro = noise.prologue(own, peer) if self.is_client else noise.prologue(peer, own)
        self._hs = noise.Handshake(initiator=self.is_client, identity=self.endpoint.identity,
                                   prologue=pro, static_secret=self.endpoint.static_secret,
                                   expected_peer=self.expected_peer)
        if self.is_client:
            self._hs_stream = self._quic.get_next_available_stream_id()
            self._flush_handshake()
        elif self._early:
            self._on_handshake_data(b"", False)

    def _on_stream_data(self, sid: int, data: bytes, end: bool) -> None:
        if self._hs_stream is None and not self.is_client and sid == 0:
            self._hs_stream = 0
        if sid == self._hs_stream:
            self._consumed(sid, len(data))
            self._on_handshake_data(data, end)
            return
        ch = self._channels.get(sid)
        if ch is None:
            if (self._local_stream(sid) or sid in self._finished
                    or self._quic._stream_is_discarded(sid)):
                self._consumed(sid, len(data))  # a stream we are done with: drop the data
                return
            if not self.is_client and not self._authed:
                # nothing but the handshake stream is read (or buffered) before the
                # peer is authenticated: an honest client never sends it
                raise ProtocolViolation("a stream other than the handshake stream came "
                                        "before authentication", slug="handshake_failed")
            ch = self._channels[sid] = _Channel(self, sid)
            if self.ready.done() and self.peer_id is not None:
                self._dispatch(ch)
            else:
                self._pending.append(ch)
        ch.feed(data, end)

    def _on_handshake_data(self, data: bytes, end: bool) -> None:
        hs = self._hs
        if hs is None:
            self._early += data
            if len(self._early) > noise.MAX_HANDSHAKE_MESSAGE_BYTES or end:
                raise ProtocolViolation("handshake data before the TLS handshake completed",
                                        slug="handshake_failed")
            return
        if self._early:
            data, self._early = bytes(self._early) + data, bytearray()
        for ev in hs.receive_data(data):
            if isinstance(ev, noise.PeerVerified) and not self.is_client:
                self._server_verified(ev.node_id)
            elif isinstance(ev, noise.Established):
                self._established(ev.node_id)
        self._flush_handshake()
        if end:
            hs.receive_eof()

    def _server_verified(self, peer: str) -> None:
        assert self._hs is not None
        ep, lim = self.endpoint, self.endpoint.limits
        self.priority = ep.is_priority(peer)
        per_peer = (lim.max_connections_per_peer if self.priority
                    else lim.max_connections_per_other_peer)
        if len(ep.by_peer.get(peer, ())) >= per_peer:
            ep.stats["refused_per_peer"] += 1
            self.peer_id = peer
            self._close(E_LIMIT, "too many connections from this node")
            return
        if not self.priority and ep.other_connections >= lim.other_connections:
            ep.stats["refused_busy"] += 1
            self.peer_id = peer
            self._close(E_LIMIT, "too many connections from peers outside the keyring")
            return
        self._hs.accept()
        self._established(peer)

    def _established(self, peer: str) -> None:
        self.peer_id = peer
        self._authed = True
        self._quic._ack_delay = ACK_DELAY_S  # (private: see the module docstring)
        lim = self.endpoint.limits
        self._conn_window = (lim.connection_window_bytes if self.priority else
                             min(lim.other_connection_window_bytes, lim.connection_window_bytes))
        self._grow_connection_window()
        self._transmit_soon()  # the full connection window (MAX_DATA)
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        self.endpoint.authenticated(self)
        self.endpoint.stats["connections_authenticated"] += 1
        if not self.ready.done():
            self.ready.set_result(peer)
        pending, self._pending = self._pending, []
        for ch in pending:
            self._dispatch(ch)
        self._arm_keepalive()

    def _flush_handshake(self) -> None:
        hs, sid = self._hs, self._hs_stream
        if hs is None or sid is None or self._hs_fin:
            return
        out = hs.data_to_send()
        fin = hs.established  # the handshake stream ends after the last message
        if out or fin:
            self._quic.send_stream_data(sid, out, end_stream=fin)
            self._hs_fin = fin
            self._transmit_soon()

    def _on_terminated(self, event: Any) -> None:
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if not self.ready.done() and not self._violated and not self._counted:
            self.endpoint.stats["handshake_aborted"] += 1
        if self.error is None:
            reason = event.reason_phrase or "closed"
            if event.error_code == E_OK:
                self.error = Unavailable(f"connection closed: {reason}", slug="closed")
            elif event.error_code == E_AUTH:
                self.error = ProtocolViolation(f"the peer refused the handshake: {reason}",
                                               slug="handshake_failed")
            elif event.error_code == E_TIMEOUT:
                self.error = Timeout(f"connection closed: {reason}")
            elif event.error_code == E_LIMIT:
                self.error = TempFailure(f"the peer is at its connection limit: {reason}",
                                         slug="busy", hint="retry later")
            else:
                self.error = Unavailable(
                    f"connection closed (code {event.error_code}): {reason}", slug="closed")
        for ch in list(self._channels.values()) + self._pending:
            ch.fail(self.error, closing=True)
        self._channels.clear()
        self._pending.clear()
        if not self.ready.done():
            self.ready.set_exception(self.error)
            self.ready.exception()  # mark retrieved: a refused client is not an error here
        self.endpoint.forget(self)
        self._wake_writers()

    # -- streams -------------------------------------------------------------

    def _local_stream(self, sid: int) -> bool:
        return bool(sid & 1) == (not self.is_client)

    def _dispatch(self, ch: _Channel) -> None:
        ep, lim = self.endpoint, self.endpoint.limits
        assert self.peer_id is not None
        peer = self.peer_id
        prio = ep.is_priority(peer)
        room = lim.max_concurrent_streams - (0 if prio else lim.reserved_streams)
        share = lim.max_streams_per_peer if prio else lim.max_streams_per_other_peer
        if ep.handler is None or ep.active_streams >= room or ep.streams_by_peer[peer] >= share:
            ep.stats["streams_refused"] += 1
            self._channels.pop(ch.stream_id, None)
            # the rest of what the peer sent before it learns of the refusal is dropped,
            # never handed to a new handler from the middle of a frame
            self._finished[ch.stream_id] = None
            if len(self._finished) > 4 * lim.max_streams_per_connection:
                self._finished.popitem(last=False)
            ch.fail(Unavailable("stream refused"))
            self.abort_stream(ch.stream_id, S_REFUSED)
            return
        ep.active_streams += 1
        ep.streams_by_peer[peer] += 1
        ep.stats["streams_accepted"] += 1
        self._serving[ch.stream_id] = peer
        task = self._loop.create_task(self._run_handler(ep.handler, ch, peer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # a handler cancelled before it ran (the connection dropped in the same turn)
        # never reaches its ``finally``: the stream is counted out here then
        task.add_done_callback(functools.partial(self._handler_done, ch))

    async def _run_handler(self, handler: Handler, ch: _Channel, peer: str) -> None:
        stream = Stream(ch, peer, self.endpoint.limits, connection=Connection(self, None),
                        incoming=True)
        try:
            await handler(peer, stream)
            stream.finish()
            try:
                await self._drained(ch.stream_id)
            except (Unavailable, TempFailure) as e:
                if e.slug == "peer_stalled":
                    raise
                # the peer closed after reading what it needed: nothing is wrong
        except ProtocolViolation as e:
            self.violation(e)
        except PhaseError as e:
            self.endpoint.stats["handler_errors"] += 1
            if e.slug == "request_timeout":  # counted, not logged: a flood of them is cheap
                self.endpoint.stats["request_timeouts"] += 1
            elif not self._logged:  # the connection has not already said why
                log.get().info("net.stream_failed", peer=peer, error=e.slug, message=e.message)
            stream.abort(S_ERROR)
        except asyncio.CancelledError:
            stream.abort(S_CANCELLED)
            raise
        except Exception as e:
            self.endpoint.stats["handler_errors"] += 1
            log.get().error("net.handler_crashed", peer=peer, error=repr(e))
            stream.abort(S_ERROR)
        finally:
            self._handler_gone(ch)

    def _handler_done(self, ch: _Channel, task: asyncio.Task[None]) -> None:
        self._handler_gone(ch)

    def _handler_gone(self, ch: _Channel) -> None:
        """A stream's handler ended (or was cancelled before it ran): its stream leaves
        the counts, once."""
        peer = self._serving.pop(ch.stream_id, None)
        if peer is None:
            return
        # bytes the handler left unread are dropped and credited (the window reopens)
        ch.fail(Unavailable("the handler is done with this stream", slug="closed"))
        ep = self.endpoint
        ep.active_streams -= 1
        ep.streams_by_peer[peer] -= 1
        if ep.streams_by_peer[peer] <= 0:
            del ep.streams_by_peer[peer]
        self._channels.pop(ch.stream_id, None)
        self._finished[ch.stream_id] = None  # late data or FIN is dropped, not re-handled
        while len(self._finished) > 4 * ep.limits.max_streams_per_connection:
            self._finished.popitem(last=False)

    async def _drained(self, sid: int) -> None:
        """Wait until the peer has acknowledged what we sent on ``sid``; a peer that
        stops reading is dropped after ``send_timeout_s`` (the bytes are not kept)."""
        await self._wait_for_room(sid, lambda: self._buffered(sid) == 0)

    def open_channel(self) -> _Channel:
        if self.error is not None:
            raise self.error
        if self.closing:
            raise Unavailable("the connection is closing", slug="closed")
        sid = self._quic.get_next_available_stream_id()
        ch = self._channels[sid] = _Channel(self, sid)
        return ch

    def credit(self, ch: _Channel, n: int) -> None:
        """The application consumed (or we dropped) ``n`` bytes: maybe grant more window."""
        if n <= 0:
            return
        ch.consumed += n
        self._consumed_total += n
        grow = self._grow_connection_window()
        stream = self._quic._streams.get(ch.stream_id)
        if stream is not None and self._grow_stream_window(stream, ch.consumed):
            grow = True
        if grow:
            self._transmit_soon()

    def _consumed(self, sid: int, n: int) -> None:
        """``n`` bytes of a stream without a channel (the handshake, or one we are done
        with) were consumed on arrival."""
        self._consumed_total += n
        self._grow_connection_window()
        stream = self._quic._streams.get(sid)
        if stream is not None:
            self._grow_stream_window(stream, stream.receiver.highest_offset)

    def _grow_stream_window(self, stream: Any, consumed: int) -> bool:
        """Raise the stream's MAX_STREAM_DATA to ``consumed`` + the window once half
        of the window was used (the frame goes out with the next packet)."""
        window = self.endpoint.limits.stream_window_bytes
        target = consumed + window
        if stream.max_stream_data_local and target >= stream.max_stream_data_local + window // 2:
            stream.max_stream_data_local = target
            return True
        return False

    def _grow_connection_window(self) -> bool:
        """Likewise MAX_DATA, from every byte the application consumed."""
        max_data, window = self._quic._local_max_data, self._conn_window
        target = self._consumed_total + window
        if target >= max_data.value + window // 2:
            max_data.value = target
            return True
        return False

    def _buffered(self, sid: int) -> int:
        stream = self._quic._streams.get(sid)
        return len(stream.sender._buffer) if stream is not None else 0

    def _conn_buffered(self) -> int:
        return sum(len(st.sender._buffer) for st in self._quic._streams.values())

    async def _wait_for_room(self, sid: int, ready: Callable[[], bool]) -> None:
        if ready():
            return
        lim = self.endpoint.limits
        deadline = self._loop.time() + lim.send_timeout_s
        while not ready():
            if self.error is not None:
                raise self.error
            left = deadline - self._loop.time()
            if left <= 0:
                self.endpoint.stats["peer_stalled"] += 1
                err = Timeout(f"the peer read nothing for {lim.send_timeout_s:g} s",
                              slug="peer_stalled")
                self.error = self.error or err
                self._report(err)
                self._close(E_TIMEOUT, "peer stopped reading")
                raise err
            fut: asyncio.Future[None] = self._loop.create_future()
            self._waiters.append((ready, fut))
            timer = self._loop.call_later(left, _resolve, fut)
            try:
                await fut
            finally:
                timer.cancel()

    async def send(self, sid: int, data: bytes) -> None:
        """Queue ``data``, never holding more than ``send_buffer_bytes`` unacknowledged
        per stream, or four times that per connection."""
        lim = self.endpoint.limits
        per_conn = 4 * lim.send_buffer_bytes
        view = memoryview(data)
        while True:
            room = min(lim.send_buffer_bytes - self._buffered(sid),
                       per_conn - self._conn_buffered())
            if room <= 0:
                await self._wait_for_room(sid, lambda: (
                    self._buffered(sid) < lim.send_buffer_bytes
                    and self._conn_buffered() < per_conn))
                continue
            piece, view = view[:room], view[room:]
            try:
                self._quic.send_stream_data(sid, bytes(piece))
            except (ValueError, RuntimeError) as e:  # the stream was reset or finished
                raise Unavailable(f"cannot send on stream {sid}: {e}",
                                  slug="stream_reset") from None
            self._send_soon()
            if not view:
                return

    def send_eof(self, sid: int) -> None:
        if self.error is not None:
            return
        try:
            self._quic.send_stream_data(sid, b"", end_stream=True)
        except (ValueError, RuntimeError):  # already reset or finished
            return
        self._send_soon()

    def abort_stream(self, sid: int, code: int) -> None:
        if self.error is not None:
            return
        try:
            self._quic.reset_stream(sid, code)
            if not self._local_stream(sid) or sid in self._quic._streams:
                self._quic.stop_stream(sid, code)
        except ValueError:
            pass
        self._transmit_soon()

    def _wake_writers(self) -> None:
        """Something was acknowledged, or the connection ended: wake the writers whose
        condition now holds (all of them once the connection has failed)."""
        if not self._waiters:
            return
        failed = self.error is not None
        keep = []
        for ready, fut in self._waiters:
            if fut.done():
                continue
            if failed or ready():
                fut.set_result(None)
            else:
                keep.append((ready, fut))
        self._waiters = keep

    # -- lifecycle -----------------------------------------------------------

    def _arm_keepalive(self) -> None:
        interval = self.endpoint.limits.keepalive_s
        if interval > 0 and self.error is None:
            self._keepalive = self._loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self._keepalive = None
        if self.error is None:
            self._quic.send_ping(0)
            self.transmit()
            self._arm_keepalive()

    def _handshake_timed_out(self) -> None:
        self._hs_timer = None
        if not self.ready.done():
            self.endpoint.stats["handshake_timeouts"] += 1
            self._report(Timeout("the handshake did not finish in time"))
            self._close(E_TIMEOUT, "handshake timeout")

    def violation(self, err: PhaseError) -> None:
        """The peer misbehaved: log once, count, drop this connection (only)."""
        if self._violated:
            return
        self._violated = True
        auth = not self.ready.done() or err.slug in ("handshake_failed", "wrong_peer",
                                                     "bad_signature")
        self.endpoint.stats["handshake_failed" if auth else "protocol_violations"] += 1
        if self.error is None:
            self.error = err
        self._report(err)
        self._close(E_AUTH if auth else E_PROTOCOL, err.slug)
        if not self.ready.done():
            self.ready.set_exception(err)
            self.ready.exception()

    def evict(self, reason: str) -> None:
        """Drop this unauthenticated connection to make room (oldest first)."""
        ep = self.endpoint
        ep.stats["handshakes_evicted"] += 1
        ep.summarize("evicted")
        self._counted = self._logged = True
        if self._hs_timer is not None:
            self._hs_timer.cancel()
            self._hs_timer = None
        ep.settled(self)
        ep.protocols.discard(self)
        self._close(E_LIMIT, reason)

    def _report(self, err: PhaseError) -> None:
        if self._logged:
            return
        self._logged = True

        def line() -> None:
            log.get().warning("net.peer_dropped", error=err.slug, message=err.message,
                              role=self.endpoint.role, peer=self.peer_id or "unauthenticated",
                              addr=str(self.addr[0]) if self.addr else None)
        if not self.is_client and not self._authed:  # a flood must not flood the log
            self.endpoint.summarize(err.slug, line)
        else:
            line()

    def _internal(self, e: BaseException) -> None:
        self.endpoint.stats["internal_errors"] += 1
        log.get().error("net.internal_error", error=repr(e), peer=self.peer_id)
        self._close(E_INTERNAL, "internal error")

    def _close(self, code: int, reason: str) -> None:
        self.closing = True
        try:
            self._quic.close(error_code=code, reason_phrase=reason)
            self._transmit_soon()
        except Exception as e:  # pragma: no cover - the transport is already gone
            log.get().debug("net.close_failed", error=repr(e))
        for t in list(self._tasks):
            t.cancel()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class Connection:
    """An authenticated connection to one peer."""

    def __init__(self, proto: _PhaseProtocol, transport: asyncio.BaseTransport | None) -> None:
        self._proto = proto
        self._transport = transport
        assert proto.peer_id is not None
        self.peer_id: str = proto.peer_id

    @property
    def remote_address(self) -> tuple[str, int] | None:
        """The peer's (host, port) as this side sees it (for "observed address")."""
        addr = self._proto.addr
        if addr is None:
            return None
        return str(addr[0]), int(addr[1])

    @property
    def closed(self) -> bool:
        p = self._proto
        return p.closing or p.error is not None or p._closed.is_set()

    async def open_stream(self) -> Stream:
        """A new request stream to the peer."""
        ch = self._proto.open_channel()
        return Stream(ch, self.peer_id, self._proto.endpoint.limits, connection=self)

    async def close(self) -> None:
        if not self._proto._closed.is_set():
            self._proto._close(E_OK, "bye")
            try:
                async with asyncio.timeout(5.0):
                    await self._proto.wait_closed()
            except TimeoutError:  # pragma: no cover
                pass
        if self._transport is not None:
            self._transport.close()

    def close_now(self) -> None:
        """Send CONNECTION_CLOSE and let go at once, without waiting out QUIC's closing
        period (about three probe timeouts). For a one-shot client that is done with
        the connection and exits next: the close frame goes out before this returns;
        should it be lost, the peer's idle timeout ends its side (docs/transport.md)."""
        p = self._proto
        if not p._closed.is_set() and p.error is None and not p.closing:
            p.closing = True
            try:
                p._quic.close(error_code=E_OK, reason_phrase="bye")
                p.transmit()  # now, not on a later turn of the loop
            except Exception as e:  # pragma: no cover - the transport is already gone
                log.get().debug("net.close_failed", error=repr(e))
            for t in list(p._tasks):
                t.cancel()
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        await self._proto.wait_closed()

    def __repr__(self) -> str:
        return f"Connection(peer={self.peer_id[:16]}…)"


class Server:
    """A listening endpoint. ``stats`` counts what happened; ``port`` is the bound port."""

    def __init__(self, endpoint: _Endpoint, quic_server: Any) -> None:
        self._ep = endpoint
        self._server = quic_server
        sockname = quic_server._transport.get_extra_info("sockname")
        self.host: str = sockname[0]
        self.port: int = sockname[1]

    @property
    def stats(self) -> Counter[str]:
        return self._ep.stats

    @property
    def connection_count(self) -> int:
        """Live QUIC connections, authenticated or not."""
        return len(self._ep.protocols)

    def peers(self) -> dict[str, int]:
        """Authenticated node ids and how many connections each has."""
        return {p: len(s) for p, s in self._ep.by_peer.items()}

    async def close(self) -> None:
        self._ep.flush_summary()
        protos = list(self._ep.protocols)
        for p in protos:
            p._close(E_OK, "server closed")
        await asyncio.sleep(0)  # let the close packets go out
        self._server.close()
        for p in protos:
            p._on_terminated(events.ConnectionTerminated(error_code=E_OK, frame_type=None,
                                                         reason_phrase="server closed"))


async def listen(host: str, port: int, identity: Identity, handler: Handler,
                 limits: Limits | None = None, *, priority: Priority | None = None,
                 retry: bool = True) -> Server:
    """Serve ``handler(peer_id, stream)`` for every stream an authenticated peer opens.

    ``priority(peer_id)`` says which peers get the reserved shares of connections
    and streams (plasmd: the keyring's keys); without it every peer does.
    ``retry`` validates each client's address with a QUIC Retry before any
    connection state exists (one more round trip per handshake)."""
    ep = _Endpoint(identity, limits or Limits(), handler, "server", priority)

    def create_protocol(quic: Any, stream_handler: Any = None) -> _PhaseProtocol:
        return _PhaseProtocol(quic, ep, is_client=False)

    try:
        qs = await serve(host, port, configuration=_quic_config(ep, is_client=False),
                         create_protocol=create_protocol, retry=retry)
    except OSError as e:
        raise Unavailable(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return Server(ep, qs)


class Client:
    """The dialling side: one certificate and Noise key for all its connections."""

    def __init__(self, identity: Identity, limits: Limits | None = None,
                 handler: Handler | None = None) -> None:
        self._ep = _Endpoint(identity, limits or Limits(), handler, "client")

    @property
    def stats(self) -> Counter[str]:
        return self._ep.stats

    @property
    def limits(self) -> Limits:
        return self._ep.limits

    async def connect(self, host: str, port: int, *, expected_node_id: str | None = None,
                      local_host: str | None = None) -> Connection:
        ep = self._ep
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            raise Unavailable(f"cannot resolve {host}: {e.strerror}") from None
        family, _, _, _, addr = infos[0]
        if local_host is None:
            ip = ipaddress.ip_address(addr[0])
            local_host = str(ip) if ip.is_loopback else ("::" if family == socket.AF_INET6
                                                         else "0.0.0.0")  # noqa: S104
        quic = QuicConnection(configuration=_quic_config(ep, is_client=True))
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((local_host, 0))
            sock.connect(addr)  # a connected socket hears ICMP "port unreachable"
            transport, proto = await loop.create_datagram_endpoint(
                lambda: _PhaseProtocol(quic, ep, is_client=True,
                                       expected_peer=expected_node_id, addr=addr),
                sock=sock)
        except OSError as e:
            sock.close()
            raise Unavailable(f"cannot open a UDP socket: {e.strerror}") from None
        assert isinstance(proto, _PhaseProtocol)
        try:
            proto.connect(addr)
            async with asyncio.timeout(ep.limits.handshake_timeout_s + 1.0):
                await asyncio.shield(proto.ready)
        except TimeoutError:
            proto._close(E_TIMEOUT, "handshake timeout")
            transport.close()
            raise Timeout(f"no authenticated connection to {host}:{port} within "
                          f"{ep.limits.handshake_timeout_s:g} s") from None
        except PhaseError:
            transport.close()
            raise
        except ConnectionError:  # pragma: no cover
            transport.close()
            raise Unavailable(f"cannot connect to {host}:{port}") from None
        return Connection(proto, transport)


async def connect(host: str, port: int, identity: Identity, *,
                  expected_node_id: str | None = None, limits: Limits | None = None,
                  handler: Handler | None = None) -> Connection:
    """One authenticated connection (a fresh certificate and Noise key: prefer a Pool)."""
    return await Client(identity, limits, handler).connect(
        host, port, expected_node_id=expected_node_id)
