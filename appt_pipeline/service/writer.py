"""Group commit of staged webhook rows into ``webhook_events`` (SPEC §1, §7).

Requests call :meth:`GroupCommitWriter.submit` and wait; a writer task takes everything queued (at
most ``max_rows``), stores it with ONE ``INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING
dedupe_key`` in its own transaction (an autocommit statement: committed before ``execute`` returns),
then resolves every waiting request: ``True`` when its row was inserted, ``False`` when its
``dedupe_key`` was already stored or appeared earlier in the same group. Up to ``in_flight`` groups
are in the database at once; while they are, new requests queue up and form the next, larger group —
so latency stays near one round trip at low load and throughput grows with load.

The statement is the store's :data:`appt_pipeline.store.webhook_events.INSERT_EVENTS_SQL`: the group
travels as ONE JSON array (``json_to_recordset``); each row is serialised by orjson in its request
(~10 µs, :func:`~appt_pipeline.store.webhook_events.row_json`).

A request is answered only after the commit returned (the row is durable) — never before. When the
database is unavailable every waiting request of the group gets :class:`DatabaseUnavailable` (the
HTTP layer answers 503/429 and the provider retries; the insert is idempotent, so a group whose
commit outcome was lost is simply recognised as a duplicate on redelivery: nothing is lost).

Rows of one group are sorted by ``dedupe_key`` so that two concurrent groups that share keys lock
them in the same order (no deadlock). A group refused for a row-level reason (``DataError`` such as
a NUL character, ``IntegrityError`` such as a workspace deleted meanwhile) is retried row by row so
only the bad row fails (:class:`RowRejected`).
"""

import asyncio
import contextlib
import logging
from typing import Any

import psycopg

from appt_pipeline.domain.webhook_staging import StagedEvent
from appt_pipeline.service.db import ROW_ERRORS, Database, DatabaseUnavailable, describe_error
from appt_pipeline.store.webhook_events import INSERT_EVENTS_SQL, insert_param, row_json

log = logging.getLogger(__name__)

class RowRejected(Exception):
    """The database refused this row itself. ``reason``: ``unknown_workspace`` (foreign key) or
    ``invalid_field`` (a value PostgreSQL cannot store)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: (workspace id, dedupe key, row JSON, the request's future)
_Item = tuple[str, str, bytes, "asyncio.Future[bool]"]


class GroupCommitWriter:
    """Batches inserts of staged events (see the module doc). Lives in one event loop.

    Args:
        db: the pool wrapper (autocommit connections).
        max_rows: most rows per INSERT (default 500).
        in_flight: concurrent group transactions (default 2).
        timeout_s: longest one group may take in the database (seconds), then its requests get
            :class:`DatabaseUnavailable`.
    """

    def __init__(self, db: Database, *, max_rows: int = 500, in_flight: int = 2, timeout_s: float = 10.0) -> None:
        self._db = db
        self._max_rows = max_rows
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._slots = asyncio.Semaphore(in_flight)
        self._flushes: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        #: groups stored and rows inserted so far (for tests and logs)
        self.groups = 0
        self.rows = 0

    def start(self) -> None:
        """Start the writer task in the running loop (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="appt-webhook-writer")

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Let running groups finish (up to ``timeout_s``), then stop; queued requests get
        :class:`DatabaseUnavailable`."""
        if self._flushes:
            await asyncio.wait(set(self._flushes), timeout=timeout_s)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def submit(self, workspace_id: str, event: StagedEvent) -> bool:
        """Store ``event`` durably; True when inserted, False when its dedupe key was already stored.

        Raises:
            DatabaseUnavailable: the group failed for lack of a database or took longer than ``timeout_s``
                (a request waits at most about ``in_flight + 1`` group timeouts).
            RowRejected: the database refused this row (or it cannot be serialised).
        """
        try:
            row = row_json(workspace_id, event)
        except TypeError:
            raise RowRejected("invalid_field") from None
        if self._task is None or self._task.done():
            raise DatabaseUnavailable("closed")
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((workspace_id, event.dedupe_key, row, future))
        return await future  # bounded: every group ends within timeout_s (see _insert)

    async def _run(self) -> None:
        try:
            while True:
                await self._slots.acquire()
                try:
                    batch = [await self._queue.get()]
                except BaseException:
                    self._slots.release()
                    raise
                while len(batch) < self._max_rows and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                task = asyncio.get_running_loop().create_task(self._flush(batch))
                self._flushes.add(task)
                task.add_done_callback(self._flushes.discard)
        finally:
            while not self._queue.empty():
                future = self._queue.get_nowait()[3]
                if not future.done():
                    future.set_exception(DatabaseUnavailable("closed"))

    async def _flush(self, batch: list[_Item]) -> None:
        try:
            await self._store(batch)
        except asyncio.CancelledError:
            _fail(batch, "closed")
            raise
        except Exception as exc:  # never leave a request waiting
            log.error("webhook group of %d rows failed unexpectedly (%s)", len(batch), type(exc).__name__)
            _fail(batch, "database_error")
        finally:
            self._slots.release()

    async def _store(self, batch: list[_Item]) -> None:
        first: dict[str, int] = {}
        for i, item in enumerate(batch):
            first.setdefault(item[1], i)
        unique = sorted((batch[i] for i in first.values()), key=lambda item: item[1])
        try:
            inserted = await self._insert([item[2] for item in unique])
        except DatabaseUnavailable as exc:
            _fail(batch, exc.reason)
            return
        except ROW_ERRORS as exc:
            log.warning("webhook group of %d rows refused (%s); storing row by row", len(unique), describe_error(exc))
            await self._store_one_by_one(batch, first, unique)
            return
        _resolve(batch, first, inserted)

    async def _insert(self, rows: list[bytes]) -> set[str]:
        params = insert_param(rows)

        async def insert(conn: psycopg.AsyncConnection[Any]) -> set[str]:
            # autocommit: the statement is its own transaction, committed before execute() returns
            cur = await conn.execute(INSERT_EVENTS_SQL, params)
            return {r[0] for r in await cur.fetchall()}

        try:
            # one timer per group, not per request: a group (and so every request in it) ends within
            # timeout_s even if the server stops answering mid-statement
            async with asyncio.timeout(self._timeout_s):
                keys = await self._db.run(insert)  # waits at most pool_timeout_s for a connection
        except TimeoutError:
            raise DatabaseUnavailable("timeout") from None
        self.groups += 1
        self.rows += len(keys)
        return keys

    async def _store_one_by_one(self, batch: list[_Item], first: dict[str, int], unique: list[_Item]) -> None:
        inserted: set[str] = set()
        rejected: dict[str, str] = {}
        for ws, key, row, _ in unique:
            try:
                inserted |= await self._insert([row])
            except DatabaseUnavailable as exc:
                _fail(batch, exc.reason)
                return
            except ROW_ERRORS as exc:
                reason = "unknown_workspace" if isinstance(exc, psycopg.errors.ForeignKeyViolation) else "invalid_field"
                log.warning("webhook row of workspace %r refused: %s", ws, describe_error(exc))
                rejected[key] = reason
        for _, key, _, future in batch:
            if key in rejected and not future.done():
                future.set_exception(RowRejected(rejected[key]))
        _resolve(batch, first, inserted)


def _resolve(batch: list[_Item], first: dict[str, int], inserted: set[str]) -> None:
    for i, (_, key, _, future) in enumerate(batch):
        if not future.done():
            future.set_result(key in inserted and first[key] == i)


def _fail(batch: list[_Item], reason: str) -> None:
    for item in batch:
        future = item[3]
        if not future.done():
            future.set_exception(DatabaseUnavailable(reason))  # one instance per waiter
